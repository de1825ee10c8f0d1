#!/usr/bin/env python
"""Task inference (forget-me-not, decided per episode) over real game streams, scored against the true games.

    python scripts/bench_task_inference.py [--quick] [--long-steps 100000] [--only TEXT] [fmn.key=value ...]
        [--save-tasks FILE.npz | --check-tasks FILE.npz]

The full protocol: the EWC paper's 19 Atari games visited 3 times in seeded orders (two seeds, fixed and
mixed segment lengths, a sticky-biased policy) and twice under a uniform policy; MinAtar's five games visited 4 times
under both policies; a long stay of ``--long-steps`` agent steps in every game; eight ALE games outside the pool
(revisits and 30k-step stays); and MinAtar streams played by learning agents, checkpoints of real runs of the table
preset and of longer single-game runs (trained on first use, minutes of CPU each, then cached:
agents/bench/agent_policies.py). ``--quick`` runs a small subset.
Frames are recorded once and cached (agents/bench/inference_stream.py), so a re-run only replays them. Prints one
line per stream, worst first, then the totals; exits 1 when a stream misses a target (ARI ≥ 0.99, one task per game,
revisits back to their task, no spurious switch, detection ≤ 100 agent steps, CPU cost ≤ 15% of the emulator's).
``--save-tasks`` keeps every stream's inferred task at each agent step; ``--check-tasks`` compares them with a saved
file and exits 1 on the first difference (a change meant to make inference faster must not change a decision).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import yaml

from agents.bench.inference_stream import protocol, run_stream
from cl_rl.task_inference import FMNSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="task-inference settings such as fmn.window=8 (see FMNSettings)")
    parser.add_argument("--quick", action="store_true", help="a small subset of the streams, for iterating")
    parser.add_argument(
        "--long-steps", type=int, default=100_000, help="agent steps of each long stay (default: %(default)s)"
    )
    parser.add_argument(
        "--only", default="", help="run only the streams whose name contains this text, in any case (default: all)"
    )
    parser.add_argument("--save-tasks", default="", help="write each stream's task at every agent step to this .npz")
    parser.add_argument(
        "--check-tasks", default="", help="compare each stream's task at every agent step with this --save-tasks file"
    )
    args = parser.parse_args(argv)
    try:
        if args.long_steps < 1:
            raise ValueError(f"--long-steps must be >= 1, got {args.long_steps}")
        fmn = FMNSettings(**_parse_settings(args.settings))
        reference = _load_tasks(args.check_tasks)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"settings: {dataclasses.asdict(fmn)}", flush=True)
    results, tasks, differ = [], {}, 0
    for spec in protocol(args.quick, args.long_steps):
        if args.only.lower() in spec.name.lower():
            seen: list[int] = []
            keep = args.save_tasks or reference is not None
            on_step = (lambda _, model, seen=seen: seen.append(model.current)) if keep else None
            results.append(run_stream(spec.name, spec.visits, fmn, spec.policy, spec.seed, on_step=on_step))
            print(results[-1].line(), flush=True)
            tasks[spec.name] = np.asarray(seen, np.int32)
            if reference is not None:
                differ += not _same_tasks(spec.name, tasks[spec.name], reference)
    if not results:
        print(f"error: no stream's name contains {args.only!r}", file=sys.stderr)
        return 2
    if args.save_tasks:
        np.savez_compressed(args.save_tasks, **tasks)
    print("\nper stream, worst first:")
    for result in sorted(results, key=lambda r: r.badness()):
        print(result.line())
    steps = sum(r.steps for r in results)
    cost = sum(r.us_per_step * r.steps for r in results) / steps
    env = sum(r.env_us_per_step * r.steps for r in results) / steps
    failed = sum(not r.passed for r in results)
    print(
        f"{len(results)} streams, {steps} agent steps, {failed} missing a target; worst ARI "
        f"{min(r.ari for r in results):.4f}; task inference {cost:.1f} µs per agent step = {100 * cost / env:.2f}% "
        f"of the emulator's {env:.0f} µs"
    )
    if reference is not None:
        same = len(results) - differ
        print(f"tasks at every agent step: {same} of {len(results)} streams identical to {args.check_tasks}")
    return 1 if failed or differ else 0


def _load_tasks(path: str) -> dict[str, np.ndarray] | None:
    """The per-step tasks saved by ``--save-tasks``, by stream name (None without a path)."""
    if not path:
        return None
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _same_tasks(name: str, tasks: np.ndarray, reference: dict[str, np.ndarray]) -> bool:
    """Whether the stream's per-step tasks equal the reference's; prints where they first differ."""
    if name not in reference:
        print(f"  tasks of {name!r}: not in the reference file")
        return False
    ref = reference[name]
    if len(ref) == len(tasks) and np.array_equal(ref, tasks):
        return True
    step = int(np.flatnonzero(ref[: len(tasks)] != tasks[: len(ref)])[0]) if len(ref) == len(tasks) else -1
    print(
        f"  tasks of {name!r} differ from the reference (first at agent step {step}; lengths {len(tasks)}, {len(ref)})"
    )
    return False


def _parse_settings(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.removeprefix("fmn.")
        if not sep or key not in {f.name for f in dataclasses.fields(FMNSettings)}:
            names = ", ".join(f.name for f in dataclasses.fields(FMNSettings))
            raise ValueError(f"setting {item!r} is not fmn.<key>=<value> with a key among {names}")
        settings[key] = yaml.safe_load(value)
    return settings


if __name__ == "__main__":
    sys.exit(main())
