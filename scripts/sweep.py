#!/usr/bin/env python
"""Run a sweep: a base config expanded over axes of config keys, each run a Ray task with its own run directory.

python scripts/sweep.py SWEEP.yaml [--address ADDR] [--sweep-dir DIR] [--refresh SECONDS]

Every run's config is validated before anything starts; a bad sweep file exits 2 with a message. Without --address
(or RAY_ADDRESS) Ray starts on this machine; with it the sweep joins that cluster (the sweep directory must then be
on storage every node sees). A worker that dies is retried from the run's newest checkpoint; launching the sweep
again skips finished runs and resumes the others; Ctrl-C stops every run at a checkpoint. At the end: the
comparison over the sweep (IQM of end HNS per group with 95 % bootstrap intervals). Needs `pip install -e ".[sweep]"`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from agents.run.arguments import positive
from agents.run.lock import DirectoryError
from agents.run.sweep import SweepError, compare_sweep, load_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep file, e.g. configs/sweeps/example.yaml")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster to join (RAY_ADDRESS)")
    parser.add_argument("--sweep-dir", type=Path, help="where the run directories go (default: sweeps/<name>)")
    parser.add_argument("--refresh", type=positive, default=10.0, help="seconds between progress views (default 10)")
    args = parser.parse_args(argv)

    try:
        sweep = load_sweep(args.sweep)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from agents.run.sweep_ray import run_sweep
    except ImportError as err:
        print(f"error: {err}; sweeps run on Ray: pip install -e '.[sweep]'", file=sys.stderr)
        return 2
    sweep_dir = args.sweep_dir or Path("sweeps") / sweep.name
    print(f"sweep directory: {sweep_dir}")
    try:
        states = run_sweep(sweep, sweep_dir, address=args.address, refresh_s=args.refresh)
    except (SweepError, DirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = shlex.join([sys.executable, os.path.relpath(__file__), str(args.sweep), "--sweep-dir", str(sweep_dir)])
        print(f"stopped; every run is resumable: {again}")
        return 130
    failed = {name: state for name, state in states.items() if state != "done"}
    comparison = compare_sweep(sweep, sweep_dir)
    if comparison:
        print(comparison)
    for name, state in failed.items():
        print(f"not finished: {name}: {state}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
