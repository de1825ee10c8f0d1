#!/usr/bin/env python
"""The plasticity diagnostics (plasticity/… scalars) of several runs: one figure, and a Markdown summary printed.

python scripts/plot_plasticity.py RUN_DIR [RUN_DIR ...] [--labels A B ...] --out FIGURE.png [--title TEXT]

Each RUN_DIR is a run directory of scripts/train.py (config.yaml, tb/). The summary gives each diagnostic at the end
of each run and, in brackets, its mean over the run (agents/evaluation/plasticity_report.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.evaluation.plasticity_report import diagnostics_figure, read_diagnostics, summary_markdown
from agents.evaluation.plots import save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories of scripts/train.py")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the directory names)")
    parser.add_argument("--out", type=Path, required=True, help="the figure's path (.png)")
    parser.add_argument("--title", default="Plasticity diagnostics over the run")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        print(f"error: {len(args.labels)} labels for {len(args.runs)} runs: give one label per run", file=sys.stderr)
        return 2
    missing = [str(r) for r in args.runs if not (r / "config.yaml").is_file() or not (r / "tb").is_dir()]
    if missing:
        print(f"error: not run directories of scripts/train.py (no config.yaml or tb/): {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
        return 2
    labels = args.labels or [None] * len(args.runs)
    runs = [read_diagnostics(path, label) for path, label in zip(args.runs, labels, strict=True)]
    empty = [run.label for run in runs if not run.series]
    if empty:
        print(f"error: no plasticity/… scalars in {', '.join(empty)} (runs made before the diagnostics, or with "
              "log.plasticity_every=0 and no task switch)", file=sys.stderr)  # fmt: skip
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save(diagnostics_figure(runs, args.title), args.out)
    print(f"wrote {args.out}")
    print(summary_markdown(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
