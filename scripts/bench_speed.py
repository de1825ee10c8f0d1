#!/usr/bin/env python
"""Agent steps per second of stock SB3 DQN, this agent with the continual machinery off, and with all of it on.

Variants alternate within one process (several repeats, medians): sb3 (SB3's DQN and Atari wrappers), plain
(ContinualDQN, oracle task, no consolidation, frame replay), full (task inference, per-task buffers, EWC with two
earlier anchors), full8 (the same after eight earlier games: eight anchors); plain_sb3_replay (plain with SB3's
ReplayBuffer) on request. See agents/bench/speed_benchmark.py.

    python scripts/bench_speed.py [--steps 1000] [--repeats 3] [--game Pong] [--warmup 200] [--threads 2]
    python scripts/bench_speed.py --minatar --variants sb3,plain,full    # MinAtar network, one update per step
    python scripts/bench_speed.py --minatar --n-envs 1,2,4,8             # several envs, same updates per transition
    python scripts/bench_speed.py --bare --threads 1                    # CPU ms of a MinAtar step's network work alone
    python scripts/bench_speed.py --bare --compile --threads 1          # ... and with the loss through torch.compile
    python scripts/bench_speed.py --n-envs 1,2,4 --vector python,cpp      # this agent also on the C++ vector env
    python scripts/bench_speed.py --minatar --variants sb3,plain,plain_plasticity,full --steps 5000
                                        # the cost of the plasticity diagnostics (ratio_plasticity_vs_plain)

The last line reads `ratio_full_vs_sb3=<x> ratio_plain_vs_sb3=<x> steps_per_s_full=<x>` (with full8, the line before
it `ratio_full8_vs_sb3=<x> (eight EWC anchors)`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from agents.bench.speed_benchmark import (
    CPP,
    VARIANTS,
    BenchSettings,
    VariantResult,
    format_n_envs_report,
    format_report,
    run_benchmark,
    time_bare_steps,
    time_update_levers,
    with_vectors,
)
from agents.run.config import check_device
from envs.games import UnknownGameError


def _print_run(result: VariantResult) -> None:
    notes = " ".join(f"{k}={v:g}" for k, v in result.notes.items())
    print(
        f"  {result.name:<17} {result.steps_per_s:7.1f} steps/s ({result.cpu_steps_per_s:7.1f} per CPU s)  "
        f"peak RSS {result.peak_rss / 2**20:6.0f} MiB  {notes}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchSettings()
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help="timed agent steps per run (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds over all variants (medians are reported) (default: %(default)s)"
    )
    parser.add_argument("--game", default=None, help="the timed game (default: Pong; MinAtar/Breakout with --minatar)")
    parser.add_argument(
        "--minatar",
        action="store_true",
        help="MinAtar: its network for both, one update per agent step, DQN targets (BenchSettings.for_minatar)",
    )
    parser.add_argument(
        "--task-source",
        default=defaults.task_source,
        choices=("fmn", "oracle"),
        help="task ids of the full variants (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help="training steps before the timer starts (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of agents and envs (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch.set_num_threads for all (the CPU count; train.py uses run.threads, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=defaults.buffer_size,
        help="transitions per replay buffer (default: %(default)s)",
    )
    parser.add_argument(
        "--learning-starts",
        type=int,
        default=defaults.learning_starts,
        help="transitions before updates (default: %(default)s)",
    )
    parser.add_argument(
        "--setup-steps",
        type=int,
        default=defaults.setup_steps,
        help="agent steps per earlier game (full) (default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default="sb3,plain,full,full8",
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=defaults.device, help="torch device: auto | cpu | cuda (default: %(default)s)"
    )
    parser.add_argument(
        "--levers",
        action="store_true",
        help="instead: ms per update with each lever on or off (Adam kinds, EWC autograd/closed form, joint forward)",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="instead: CPU ms of one MinAtar step's network work alone (act + update), this agent's and SB3's",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="with --bare: also this agent's step with its loss through torch.compile (and the compile's seconds)",
    )
    parser.add_argument(
        "--plasticity-every",
        type=int,
        default=defaults.plasticity_every,
        help="agent steps between the plasticity diagnostics of variant plain_plasticity (default: %(default)s)",
    )
    parser.add_argument("--no-double-dqn", action="store_true", help="this agent with DQN's target, as SB3's DQN")
    parser.add_argument(
        "--n-envs",
        default="1",
        help="comma-separated env counts, each run by every variant at the same updates per transition; more than "
        "one prints a table of agent steps/s per n_envs (default: %(default)s)",
    )
    parser.add_argument(
        "--vector",
        default="python",
        help="comma-separated, from python,cpp: how this agent steps its envs; with cpp each of its variants also runs "
        f"with agent.vector=cpp (ale-py's C++ AtariVectorEnv; ALE only), named <variant>{CPP} (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        n_envs = [int(n) for n in args.n_envs.split(",") if n.strip()]
        if not n_envs or min(n_envs) < 1:
            raise ValueError(f"--n-envs must list ints >= 1, got {args.n_envs!r}")
        variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        unknown = set(variants) - set(VARIANTS)
        if unknown or not {"sb3", "plain", "full"} <= set(variants):
            raise ValueError(f"--variants must include sb3, plain and full, from {', '.join(VARIANTS)}; got {variants}")
        vectors = tuple(v.strip() for v in args.vector.split(",") if v.strip())
        if "python" not in vectors or set(vectors) - {"python", "cpp"} or ("cpp" in vectors and args.minatar):
            raise ValueError(
                f"--vector must be python or python,cpp (the python variants are the reference; cpp for ALE games "
                f"only), got {args.vector!r}"
            )
        variants = with_vectors(variants, vectors)
        if args.compile and not args.bare:
            raise ValueError("--compile times the bare MinAtar step: give it with --bare")
        check_device(args.device, "--device")
        if args.repeats < 1 or args.threads < 1:
            raise ValueError(f"--repeats and --threads must be >= 1, got {args.repeats} and {args.threads}")
        make = BenchSettings.for_minatar if args.minatar else BenchSettings
        settings = make(
            **({"game": args.game} if args.game else {}),
            task_source=args.task_source,
            seed=args.seed,
            steps=args.steps,
            warmup=args.warmup,
            buffer_size=args.buffer_size,
            learning_starts=args.learning_starts,
            setup_steps=args.setup_steps,
            **({"double_dqn": False} if args.no_double_dqn else {}),
            device=args.device,
            n_envs=n_envs[0],
            plasticity_every=args.plasticity_every,
        )
    except (ValueError, UnknownGameError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.levers:
        print(f"ms per update, {settings.network} network, batch 32, torch threads {torch.get_num_threads()}:")
        for name, ms in time_update_levers(settings.network).items():
            print(f"  {name:<45} {ms:8.2f}")
        return 0
    if args.bare:
        print(f"CPU ms per MinAtar step, network work alone (act + update), torch threads {torch.get_num_threads()}:")
        for name, ms in time_bare_steps(args.repeats, compile=args.compile).items():
            print(f"  {name:<20} {ms:8.2f}")
        return 0
    print(
        f"{settings.game}, seed {settings.seed}: {settings.steps} timed agent steps per run after "
        f"{settings.learning_starts} + {settings.warmup} warm-up; batch {settings.batch_size}, one update per "
        f"{settings.train_freq} steps, buffer {settings.buffer_size:,}, {settings.network} network, "
        f"ε={settings.epsilon}, "
        f"{'Double DQN' if settings.double_dqn else 'DQN'} target for this agent; "
        f"{args.repeats} repeat(s) of {', '.join(variants)}",
        flush=True,
    )
    if len(n_envs) > 1:
        by_n = {}
        for n in n_envs:
            print(f"n_envs={n}:", flush=True)
            by_n[n] = run_benchmark(dataclasses.replace(settings, n_envs=n), variants, args.repeats, report=_print_run)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"agent steps (transitions of all envs) per second, medians; load average at the end: {load}")
        print("\n".join(format_n_envs_report(by_n)))
        return 0
    results = run_benchmark(settings, variants, args.repeats, report=_print_run)
    print("\n".join(format_report(results, torch.get_num_threads())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
