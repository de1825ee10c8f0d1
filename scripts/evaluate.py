#!/usr/bin/env python
"""Evaluate the checkpoints of continual runs on every game: retention matrix, metrics, plots; compare runs.

python scripts/evaluate.py RUN_DIR [RUN_DIR ...] [--checkpoints all|segments|last|200,350] [--episodes K]
    [--epsilon E] [--task-source configured|oracle] [--seed S] [--reference SINGLE_TASK_RUN_DIR ...] [--out DIR]

Each run's files go to RUN_DIR/eval/ (agents/evaluation/retention_eval.py); with several runs, a comparison table
and plot (runs with the same run.name are seeds of one method: IQM with 95 % stratified-bootstrap CIs) go to --out.
Settings left out are the run's own `eval` section, so they match what training logged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.evaluation.retention_eval import (
    EvaluationError,
    compare_runs,
    evaluate_run,
    format_comparison,
    format_run,
    reference_scores,
    write_run,
)
from agents.run.checkpoints import CheckpointError
from agents.run.config import ConfigError
from agents.run.training import apply_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories of scripts/train.py")
    parser.add_argument(
        "--checkpoints", default="all", help="all, segments, last, or steps: 200,350 (default: %(default)s)"
    )
    parser.add_argument("--episodes", type=int, help="episodes per game and checkpoint (default: the run's eval)")
    parser.add_argument("--epsilon", type=float, help="ε of the evaluation policy (default: the run's eval, 0.05)")
    parser.add_argument("--task-source", choices=["configured", "oracle"], help="task ids: the agent's own or true")
    parser.add_argument(
        "--seed", type=int, help="seed of the evaluation envs and ε draws (default: the run's eval.seed)"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="single-task runs to normalise retention by (default: none)",
    )
    parser.add_argument("--out", type=Path, help="comparison output (default: <first run's parent>/comparison)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (see run.threads) (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    overrides = {"episodes": args.episodes, "epsilon": args.epsilon, "task_source": args.task_source, "seed": args.seed}
    progress = not args.no_progress

    try:
        reference = reference_scores(args.reference, overrides, progress) if args.reference else None
        evaluations = []
        for run_dir in args.run_dirs:
            evaluation = evaluate_run(run_dir, args.checkpoints, overrides, progress)
            print(format_run(evaluation, write_run(evaluation, reference)))
            evaluations.append(evaluation)
        if len(evaluations) > 1:
            out = args.out or args.run_dirs[0].resolve().parent / "comparison"
            print(format_comparison(compare_runs(evaluations, out)))
            print(f"written: {out} (comparison.csv, comparison.json, comparison.png)")
    except (EvaluationError, ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
