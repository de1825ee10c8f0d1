#!/usr/bin/env python
"""Choose each method's strength from finished sweeps and write the values the retention table runs with.

python scripts/select_strengths.py SWEEP_DIR [SWEEP_DIR ...] --references TABLE_DIR [--write TUNED.yaml]

Reads every finished run of the sweeps (configs/sweeps/minatar_strengths.yaml, minatar_memory.yaml), normalises its
segment-end scores by the single-task references of a retention table (TABLE_DIR/references.csv, from
`bench_retention.py PRESET --methods finetune --out TABLE_DIR`) and picks, per method, the value with the highest
½ · (final score + 1 − worst drop) (agents/evaluation/strengths.py states the criterion). Prints every candidate and
writes method → {key: value} to --write (default: TABLE_DIR/tuned.yaml) and the candidates to selection.md and
selection.json beside it; then `bench_retention.py PRESET --tuned TUNED.yaml --out TABLE_DIR` runs the table with
them. A sweep with unfinished runs, or no references, exits 2 with what to run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from agents.evaluation.retention_table import TableError
from agents.evaluation.strengths import choose, format_selection, read_candidates, read_references, tuned_settings
from agents.run.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep directories, e.g. sweeps/minatar_strengths")
    parser.add_argument("--references", type=Path, required=True, help="retention table directory with references")
    parser.add_argument("--write", type=Path, help="the chosen values (default: REFERENCES/tuned.yaml)")
    args = parser.parse_args(argv)
    target = args.write or args.references / "tuned.yaml"
    try:
        candidates = read_candidates(args.sweep_dirs, read_references(args.references))
        if not candidates:
            raise TableError(f"no run of a method with a strength in {', '.join(map(str, args.sweep_dirs))}")
    except (TableError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    chosen = choose(candidates)
    table = format_selection(candidates, chosen)
    sources = " ".join(str(d) for d in args.sweep_dirs)
    header = f"# chosen by scripts/select_strengths.py from {sources}: max ½ · (final + 1 − worst drop)\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(tuned_settings(chosen), sort_keys=False))
    (target.parent / "selection.md").write_text(table)
    rows = [
        {"method": c.method, "key": c.key, "value": c.value, "runs": c.runs, "final": c.final}
        | {"worst_drop": c.worst_drop, "criterion": c.criterion, "chosen": chosen[c.method] is c}
        for c in candidates
    ]
    (target.parent / "selection.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)
    print(f"written: {target}, {target.parent / 'selection.md'}, {target.parent / 'selection.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
