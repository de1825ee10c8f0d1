"""One writer per run directory: an exclusive lock held while a process trains, resumes, sweeps or builds a table.

The lock is ``<directory>/.lock``, an ``flock`` on that file plus the holder's pid, host and command in it. The
kernel drops an ``flock`` when its process ends in any way (exit, exception, SIGKILL), so a killed run leaves no lock
behind that would need cleaning: the file it leaves names a process that no longer holds it, and the next writer
takes it over (and says whose it was). A second writer while the first lives is refused with a ``RunDirLocked``
that names the holder. A clean release deletes the file, so a directory nobody writes holds no ``.lock``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class DirectoryError(ValueError):
    """A directory that cannot be written: a file, a path under a file, no permission, or another writer's."""


class RunDirLocked(DirectoryError):
    """Another live process writes this directory; the message names it and what to do."""


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (made and) written as a directory by this process, or None. Leaves nothing behind: the
    nearest existing directory on the way is probed with a temporary file (permissions alone do not tell: root may
    write where they forbid, and nobody into /proc or a read-only mount)."""
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        return "is a file" if existing == path else f"lies under {str(existing)!r}, which is a file"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=existing)
    except OSError as err:
        return f"cannot be written: {str(existing)!r} refuses new files ({err.strerror})"
    os.close(fd)
    os.unlink(probe)
    return None


def _holder(path: Path) -> dict:
    """What the lock file says about its holder (empty if it says nothing readable)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def directory_lock(directory: Path, what: str = "run directory") -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the directory) for the ``with`` block; ``RunDirLocked`` if another
    process holds it, ``DirectoryError`` if it cannot be written. ``what`` names it in messages ("run directory",
    "sweep directory", ...)."""
    directory = Path(directory)
    problem = directory_problem(directory)
    if problem is not None:
        raise DirectoryError(f"{what} {str(directory)!r} {problem}; choose another directory")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = _acquire(path, what)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding it: a waiting opener then finds a deleted file (see below)
        os.close(fd)


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RunDirLocked(_held_message(path, what)) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder deleted the file as it released it: lock the one that is there now
    previous = _holder(path)
    if previous.get("pid") and previous.get("host") == socket.gethostname() and not pid_alive(previous["pid"]):
        print(
            f"note: taking over the lock of {path.parent}: process {previous['pid']} that held it is gone",
            file=sys.stderr,
        )
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


def _held_message(path: Path, what: str) -> str:
    holder = _holder(path)
    who = f"process {holder['pid']} on {holder.get('host', '?')}" if holder.get("pid") else "another process"
    since = f" since {time.strftime('%H:%M:%S', time.localtime(holder['since']))}" if holder.get("since") else ""
    command = f" ({' '.join(map(str, holder['command']))})" if holder.get("command") else ""
    return (
        f"{what} {str(path.parent)!r} is being written by {who}{since}{command}. Wait for it to finish or stop it "
        f"(Ctrl-C, or kill {holder.get('pid', 'PID')}: it checkpoints and exits), then run this again; or choose "
        "another directory"
    )
