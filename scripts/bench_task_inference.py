#!/usr/bin/env python
"""Task inference (forget-me-not, decided per episode) over real game streams, scored against the true games.

    python scripts/bench_task_inference.py [--quick] [--long-steps 100000] [fmn.key=value ...]

The full protocol (issue 18): the EWC paper's 19 Atari games visited 3 times in seeded orders (two seeds, fixed and
mixed segment lengths, a sticky-biased policy) and twice under a uniform policy; MinAtar's five games visited 4 times
under both policies; and a long stay of ``--long-steps`` agent steps in every game. ``--quick`` runs a small subset.
Frames are recorded once and cached (agents/bench/inference_stream.py), so a re-run only replays them. Prints one
line per stream, worst first, then the totals; exits 1 when a stream misses a target (ARI ≥ 0.99, one task per game,
revisits back to their task, no spurious switch, detection ≤ 100 agent steps, CPU cost ≤ 15% of the emulator's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

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
    args = parser.parse_args(argv)
    try:
        if args.long_steps < 1:
            raise ValueError(f"--long-steps must be >= 1, got {args.long_steps}")
        fmn = FMNSettings(**_parse_settings(args.settings))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"settings: {dataclasses.asdict(fmn)}", flush=True)
    results = []
    for spec in protocol(args.quick, args.long_steps):
        if args.only.lower() in spec.name.lower():
            results.append(run_stream(spec.name, spec.visits, fmn, spec.policy, spec.seed))
            print(results[-1].line(), flush=True)
    if not results:
        print(f"error: no stream's name contains {args.only!r}", file=sys.stderr)
        return 2
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
    return 1 if failed else 0


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
