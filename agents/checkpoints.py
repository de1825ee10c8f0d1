"""Checkpoints in a run directory: written atomically, found again for ``--resume``.

A checkpoint is SB3's zip (``model.save``) named ``step_<agent steps>.zip``, optionally with the replay buffers in
``step_<agent steps>_replay.pkl``. Each file is written to a temporary name, fsynced and renamed, so a kill at any
moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

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


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
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
