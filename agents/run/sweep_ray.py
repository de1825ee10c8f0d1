"""Runs a sweep's runs as Ray tasks: resources per run, retries from checkpoints, a live view, the comparison.

Each run is one task of ``sweep.run_one`` with the sweep's ``num_cpus``/``num_gpus``, so Ray runs as many at once
as the cluster's resources allow. A worker that dies (killed, out of memory, node lost) is a system failure that
Ray retries up to ``max_retries`` times; the retried task finds the run's checkpoints on disk and resumes. Ctrl-C
cancels the tasks (the training's SIGINT handler writes a checkpoint), so every run stays resumable and launching
the sweep again continues it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from agents.run.lock import directory_lock
from agents.run.sweep import (
    Sweep,
    check_existing,
    format_plan,
    progress_line,
    read_progress,
    run_one,
    run_state,
)

PollHook = Callable[[dict[str, dict[str, Any] | None]], None]


def run_sweep(
    sweep: Sweep,
    sweep_dir: Path,
    address: str | None = None,
    refresh_s: float = 10.0,
    poll_s: float = 0.5,
    on_poll: PollHook | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run every unfinished run of ``sweep`` under ``sweep_dir``; returns each run's state afterwards.

    ``on_poll`` gets every running run's progress at each poll (the tests use it to kill a worker). Ray is started
    here only if something is left to run and it is not running already (``address``: join that cluster). The sweep
    directory's lock (``agents.run.lock``) is held throughout: a second launch of the sweep while this one runs is
    refused with ``RunDirLocked`` (each run's directory has its own lock too, held by the worker training it).
    """
    sweep_dir = sweep_dir.resolve()  # workers on other nodes get the same path: it must be on shared storage
    with directory_lock(sweep_dir, "sweep directory"):
        return _run_sweep(sweep, sweep_dir, address, refresh_s, poll_s, on_poll, echo)


def _run_sweep(
    sweep: Sweep,
    sweep_dir: Path,
    address: str | None,
    refresh_s: float,
    poll_s: float,
    on_poll: PollHook | None,
    echo: Callable[[str], None],
) -> dict[str, str]:
    dirs = {run.name: sweep_dir / run.name for run in sweep.runs}
    for run in sweep.runs:
        check_existing(dirs[run.name], run)
    states = {run.name: run_state(dirs[run.name], run.total_steps) for run in sweep.runs}
    echo(format_plan(sweep, list(states.values())))
    todo = [run for run in sweep.runs if states[run.name] != "done"]
    if not todo:
        return states
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    task = ray.remote(run_one).options(
        num_cpus=sweep.num_cpus, num_gpus=sweep.num_gpus, max_retries=sweep.max_retries, retry_exceptions=False
    )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    refs = {task.remote(str(dirs[run.name]), run.config.to_dict(), sweep.evaluate): run for run in todo}
    width = max(len(run.name) for run in sweep.runs)
    totals = {run.name: run.total_steps for run in sweep.runs}
    pending, last_view = list(refs), 0.0
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
            for ref in ready:
                name = refs[ref].name
                states[name] = _outcome(ref, dirs[name], totals[name])
                echo(f"{name}: {states[name]}")
            running = {refs[ref].name: read_progress(dirs[refs[ref].name]) for ref in pending}
            if on_poll is not None:
                on_poll(running)
            if time.monotonic() - last_view >= refresh_s and pending:
                _view(echo, states, {refs[ref].name for ref in pending}, dirs, totals, width)
                last_view = time.monotonic()
    except KeyboardInterrupt:
        echo("\nCtrl-C: stopping the runs (each writes a checkpoint) ...")
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=60)
        for ref in pending:
            name = refs[ref].name
            states[name] = run_state(dirs[name], totals[name])
            progress = read_progress(dirs[name])
            where = f"stopped at step {progress['step']}" if progress else "not started"
            echo(f"{name}: {states[name]} ({where})")
        raise
    return states


def _outcome(ref: ray.ObjectRef, run_dir: Path, total: int) -> str:
    """The run's state after its task ended; a task that failed for good says why."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        return f"failed: {type(err.cause).__name__}: {err.cause}"
    except ray.exceptions.RayError as err:  # worker died more often than max_retries, or the task was cancelled
        return f"failed: {type(err).__name__} (launch the sweep again to resume it)"
    return result["state"] if result["state"] == "done" else run_state(run_dir, total)


def _view(
    echo: Callable[[str], None],
    states: dict[str, str],
    pending: set[str],
    dirs: dict[str, Path],
    totals: dict[str, int],
    width: int,
) -> None:
    """One line per run: a pending run is running or evaluating as its progress file says, waiting before."""
    echo(time.strftime("%H:%M:%S"))
    for name, state in states.items():
        progress = read_progress(dirs[name])
        if name in pending:
            status = (progress or {}).get("status")
            state = {"running": "running", "finished": "evaluating"}.get(status or "", "waiting")
        echo(progress_line(name, totals[name], state.split(":")[0], progress, width))
