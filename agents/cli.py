"""The ``cl-rl`` command: ``cl-rl train|evaluate|table|sweep [ARGS ...]`` runs the matching script of ``scripts/``.

Installed by ``pip install -e .`` (``[project.scripts]`` in pyproject.toml), so the commands work from any shell in
which the project's environment is on ``PATH`` (``source .venv/bin/activate``). Each subcommand is the script itself,
with the same arguments and exit status: ``cl-rl train configs/first_run.yaml`` is
``python scripts/train.py configs/first_run.yaml``. The scripts live beside the packages in the repository, so the
command needs the editable install of a checkout.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
COMMANDS = {
    "train": ("train.py", "train a continual run from a YAML config, or --resume one"),
    "evaluate": ("evaluate.py", "score a run's checkpoints on every game: retention matrix, metrics, plots"),
    "table": ("bench_retention.py", "the retention table: every method × seed on a preset, with references"),
    "sweep": ("sweep.py", "a sweep of runs on Ray (methods × seeds × sequences)"),
}


def usage() -> str:
    lines = ["usage: cl-rl COMMAND [ARGS ...]   (cl-rl COMMAND --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<9} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``scripts/<command>.py`` with the remaining arguments as its ``sys.argv``; return its exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"error: unknown command {args[0]!r}\n{usage()}", file=sys.stderr)
        return 2
    script = SCRIPTS / COMMANDS[args[0]][0]
    if not script.is_file():
        print(f"error: {script} is missing: cl-rl needs the editable install of a checkout (pip install -e .)")
        return 2
    sys.argv = [str(script), *args[1:]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the scripts end with sys.exit(main())
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
