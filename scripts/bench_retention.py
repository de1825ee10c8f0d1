#!/usr/bin/env python
"""The retention table: every method × seed on a preset with revisits, plus single-task references, in parallel.

python scripts/bench_retention.py PRESET [--methods finetune ewc ...] [--seeds 3] [--task-source fmn|oracle]
    [--jobs N] [--threads 1] [--out DIR] [--steps-scale F] [--set key=value ...] [--reps 50000]
    [--report-only] [--rescore] [--tuned TUNED.yaml]

Each method × seed trains as an ordinary run in OUT/runs/<method>__seed<k>/, and each game of the preset alone for
as many agent steps as it gets in the whole sequence in OUT/runs/reference__<game>__seed<k>/ (fine-tuning, true
task id). A method written <method>@<source> (ewc@oracle) runs with that task source, a row of its own beside
<method>, compared with it and with finetune@<source>. A re-run reuses finished runs and resumes interrupted ones;
Ctrl-C stops every run at a checkpoint (exit 130). Writes OUT/table.md (printed), table.csv/json, runs.csv,
references.csv, differences.csv (each row against fine-tuning, with 95 % intervals), worst_drop_per_game.csv and per
method <method>_scores.png and <method>_retention.png (agents/evaluation/retention_table.py). --steps-scale and --set
shrink a smoke run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from agents.evaluation.retention_table import (
    RunsFailed,
    TableError,
    TableInterrupted,
    build_table,
    known_methods,
    plan_runs,
    run_all,
    write_table,
)
from agents.evaluation.strengths import read_tuned
from agents.run.arguments import integer
from agents.run.checkpoints import CheckpointError
from agents.run.config import ConfigError
from agents.run.lock import DirectoryError, directory_problem
from envs.games import UnknownGameError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", type=Path, help="YAML config whose sequence revisits its games")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(known_methods()),
        help="default: every method; <method>@oracle (or @fmn): a row of that method with that task source",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every method and reference (3)")
    parser.add_argument("--task-source", choices=["fmn", "oracle"], default="fmn", help="inferred (default) or true")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="parallel runs (cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run: run.threads (1)")
    parser.add_argument("--out", type=Path, help="output directory (default: runs/retention/<preset>__<task-source>)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every segment's length (smoke runs)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    parser.add_argument(
        "--tuned",
        type=Path,
        help="YAML method → {key: value} applied to that method's rows only (scripts/select_strengths.py writes it)",
    )
    parser.add_argument("--reps", type=integer(1), default=50_000, help="bootstrap resamples of each interval (50000)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: build the table from the runs finished so far (a table still running or cut short)",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score every run's checkpoints again with today's evaluation code instead of reading the logged scores",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("runs") / "retention" / f"{args.preset.stem}__{args.task_source}"

    try:
        problem = directory_problem(out)
        if problem is not None:
            raise TableError(f"--out {str(out)!r} {problem}; choose another --out")
        if args.seeds < 1 or args.jobs < 1 or args.threads < 1:
            raise TableError(
                f"--seeds, --jobs and --threads must be >= 1, got {args.seeds}, {args.jobs}, {args.threads}"
            )
        sequence, specs = plan_runs(
            args.preset,
            args.methods,
            range(args.seeds),
            args.task_source,
            args.steps_scale,
            args.set,
            args.threads,
            read_tuned(args.tuned) if args.tuned else None,
        )
        print(f"{len(specs)} runs in {out} ({args.jobs} at a time, {args.threads} thread(s) each)")
        if not args.report_only:
            run_all(specs, out, args.jobs, log=lambda line: print(line, flush=True))
        settings = {
            "preset": str(args.preset),
            "methods": args.methods,
            "seeds": args.seeds,
            "task_source": args.task_source,
            "steps_scale": args.steps_scale,
            "overrides": args.set,
            "tuned": read_tuned(args.tuned) if args.tuned else {},
            "command": shlex.join(["python", "scripts/bench_retention.py", *(sys.argv[1:] if argv is None else argv)]),
        }
        table = build_table(
            out, sequence, specs, args.reps, settings, finished_only=args.report_only, rescore=args.rescore
        )
        written = write_table(table, out)
    except (TableError, ConfigError, UnknownGameError, CheckpointError, DirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TableInterrupted as err:
        again = shlex.join([sys.executable, os.path.relpath(__file__), *sys.argv[1:]])  # the interpreter running
        print(f"\n{err}: {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # while planning or reading the runs: nothing is lost
        print("\ninterrupted", file=sys.stderr)
        return 130
    except RunsFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print((out / "table.md").read_text())
    print(f"written: {', '.join(str(p.relative_to(out)) for p in written)} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
