#!/usr/bin/env python
"""The GPU check: this agent's speed, an update's GPU levers, Atari learning and a revisit, in one time-boxed run.

On a machine with one CUDA GPU and >= 8 cores it ends within --deadline seconds (default 530, under 9 minutes, set-up
included) and writes OUT/report.json and OUT/report.md (rewritten after every part). Parts: (1) agent steps/s of
stock SB3 DQN and of this agent with everything on, one env and --n-envs through the C++ vector env; (2) ms per
update, plain and with CUDA graphs, torch.compile, device-side replay, no host sync; (3) Breakout trained for up to
260 s at the fastest setting of (1), scored over time against random and DQN's published curve; (4) if time
remains, Breakout → Pong → Breakout with fine-tuning and with EWC. docs/SPEED.md, "The GPU check", has the details.

    python scripts/gpu_check.py --out gpu_check                       # the GPU machine's own torch, deps installed
    python scripts/gpu_check.py --wheels /path/to/wheels --out gpu_check  # first: pip install the deps offline
    python scripts/gpu_check.py --dry-run --out /tmp/gpu_check_dry     # tiny budgets: the CPU dry run (~80 s)
    python scripts/gpu_check.py --print-requirements                   # the wheels that folder must hold

No CUDA device: it runs on the CPU and says so in the report. Bad input exits 2 with a message.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def requirements() -> list[str]:
    """The project's dependencies from pyproject.toml, without torch (the GPU machine's own is used)."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert block is not None, "pyproject.toml lost its dependencies list"
    names = re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)
    return [n for n in names if re.split(r"[<>=!~ \[]", n, maxsplit=1)[0] != "torch"]


def install_wheels(wheels: Path) -> None:
    """pip install the dependencies from ``wheels`` only (no network); the project itself runs from this checkout."""
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *requirements()]
    print("[gpu_check] " + " ".join(command), flush=True)
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"error: pip could not install the dependencies from {wheels} (exit {done.returncode}); the folder must "
            "hold a wheel of each of `python scripts/gpu_check.py --print-requirements` and of their dependencies, "
            "for this machine's Python (docs/SPEED.md, 'Wheels for a machine without network')"
        )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="report folder (default: %(default)s)")
    parser.add_argument("--wheels", type=Path, help="folder of wheels: pip install the dependencies from it first")
    parser.add_argument("--dry-run", action="store_true", help="tiny budgets (the test suite's CPU run)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu (default: %(default)s)")
    parser.add_argument("--deadline", type=float, help="seconds for the whole check (default: 530; dry run 100)")
    parser.add_argument("--game", help="the learnt game (default: Breakout)")
    parser.add_argument("--n-envs", help="comma-separated env counts of part 1 (default: 1,8,16; dry run 1,2)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of part 2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--print-requirements", action="store_true", help="print the wheels needed, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse(argv)
    if args.print_requirements:
        print("\n".join(requirements()))
        return 0
    if args.wheels is not None:
        if not args.wheels.is_dir():
            print(f"error: --wheels {args.wheels}: no such folder (build it as docs/SPEED.md says)", file=sys.stderr)
            return 2
        try:
            install_wheels(args.wheels)
        except SystemExit as err:
            print(err, file=sys.stderr)
            return 2
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the project runs from this checkout: no install of it needed
    try:
        import torch

        from agents.bench.gpu_check import CheckSettings, run_check, write_json
        from agents.bench.gpu_report import markdown
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in ("agents", "cl_rl", "envs"):
            raise  # the checkout itself is broken: not a missing dependency
        print(
            f"error: no module {err.name!r}: install the dependencies (pip install -e . on a machine with network, "
            "or --wheels DIR with the folder docs/SPEED.md describes)",
            file=sys.stderr,
        )
        return 2
    overrides: dict = {"device": args.device, "compile": not args.no_compile}
    try:
        if args.deadline is not None:
            overrides["deadline_s"] = args.deadline
        if args.game is not None:
            overrides["game"] = args.game
        if args.n_envs is not None:
            overrides["n_envs"] = tuple(int(n) for n in args.n_envs.split(",") if n.strip())
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        settings = CheckSettings.dry_run(**overrides) if args.dry_run else CheckSettings(**overrides)
        if settings.device not in ("auto", "cpu") and not settings.device.startswith("cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda[:N], got {settings.device!r}")
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {settings.device}: torch {torch.__version__} sees no CUDA device; use auto")
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)

    def write(report: dict, out: Path) -> None:
        write_json(report, out / "report.json")
        (out / "report.md").write_text(markdown(report))

    command = "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run_check(settings, args.out, started, command.strip(), write)
    statuses = ", ".join(f"{name} {part['status']}" for name, part in report["parts"].items())
    print(f"[gpu_check] {report['elapsed_s']} s: {statuses}; report: {args.out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
