"""Checkpoints in a run directory: written atomically, found again for ``--resume``.

A checkpoint is SB3's zip (``model.save``) named ``step_<agent steps>.zip``, optionally with the replay buffers in
``step_<agent steps>_replay.pkl``. Each file is written to a temporary name, fsynced and renamed, so a kill at any
moment leaves the previous checkpoint whole. ``newest_valid_checkpoint`` finds the checkpoint to resume from, skipping
damaged ones (truncated, corrupt, or of another format) with a warning; ``load_checkpoint`` is the one way a
checkpoint is loaded (``--resume``, ``scripts/evaluate.py``, the retention table): checked by ``checkpoint_problem``
first, then rebuilt, and any failure is a ``CheckpointError`` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.sb3.continual_dqn import CHECKPOINT_FORMAT, ContinualDQN

_NAME = re.compile(r"^step_(\d{10})\.zip$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:010d}.zip"


def replay_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + "_replay.pkl")


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    ``write`` gets a path rather than an open file because SB3's savers close the file they are given.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file, the problem and the fix."""


def checkpoint_data(path: Path) -> dict[str, Any]:
    """The model's saved attributes as SB3 wrote them (JSON; objects it pickled stay encoded), without loading it."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))


def load_checkpoint(path: Path, env: Any = None, device: str = "auto", fix: str = "") -> ContinualDQN:
    """The agent of checkpoint ``path`` (``env``: the env to continue in; None to evaluate); ``CheckpointError`` with
    ``fix`` (what the caller's user can do) if it is damaged, of another format, or cannot be rebuilt."""
    fix = fix or "choose another checkpoint or start the run again"
    problem = checkpoint_problem(path, CHECKPOINT_FORMAT)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} {problem}; {fix}")
    try:
        return ContinualDQN.load(path, env=env, device=device)
    except Exception as err:  # whole and of our format, but not loadable here (another torch, a missing class)
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(err).__name__}: {err}); {fix}") from err


def checkpoint_problem(path: Path, expected_format: int) -> str | None:
    """Why ``path`` cannot be loaded (None when it looks whole and of ``expected_format``).

    Checks what can be checked without building the model: a readable zip whose members pass their CRC, SB3's
    ``data`` and ``policy.pth`` present, and our ``checkpoint_format`` number.
    """
    if not path.is_file():
        return "does not exist"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"is corrupt (member {bad!r} fails its checksum)"
            names = set(archive.namelist())
            if not {"data", "policy.pth"} <= names:
                return "is not a checkpoint of this project (no SB3 'data' and 'policy.pth' inside)"
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        return f"is truncated or not a zip file ({err})"
    except json.JSONDecodeError as err:
        return f"holds unreadable model data ({err})"
    found = data.get("checkpoint_format")
    if found != expected_format:
        written = "an older version without a format number" if found is None else f"format {found}"
        return (
            f"was written with {written}, but this version reads format {expected_format}; resume it with the "
            "version of cl_rl that wrote it, or start a new run"
        )
    return None


def newest_valid_checkpoint(directory: Path, expected_format: int) -> tuple[int, Path]:
    """(step, path) of the newest checkpoint that passes ``checkpoint_problem``; warns about each one skipped."""
    found = list_checkpoints(directory)
    if not found:
        raise CheckpointError(
            f"{str(directory)!r} holds no checkpoint (step_<N>.zip) to resume from: the run stopped before its first "
            "checkpoint; start it again with --overwrite"
        )
    problems = []
    for step, path in reversed(found):
        problem = checkpoint_problem(path, expected_format)
        if problem is None:
            return step, path
        problems.append(f"{path.name} {problem}")
        warnings.warn(f"skipping checkpoint {path}: it {problem}", stacklevel=2)
    raise CheckpointError(
        f"no usable checkpoint in {str(directory)!r}: " + "; ".join(problems) + ". Start the run again with --overwrite"
    )
