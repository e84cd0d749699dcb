"""Exclusive locks on files, so two lfkit processes never write one thing at once.

``flock`` locks belong to the open file: a child that inherits the descriptor holds
the lock too, and the kernel drops it when the last holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Busy(Exception):
    """Another process holds the lock; ``holder`` is the pid it wrote, if any."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by pid {holder or '?'}")
        self.path, self.holder = path, holder


def acquire(path: Path, *, blocking: bool = True) -> int:
    """Open ``path`` and lock it exclusively; the descriptor, to close (or pass on) later."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise Busy(Path(path), holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting for it) for a read-modify-write."""
    fd = acquire(path)
    try:
        yield
    finally:
        os.close(fd)


def holder_of(path: Path) -> str | None:
    """The pid written in a lock file another process holds now ("" when it wrote none), or None when
    nobody holds it. Writes nothing: a check (a dry-run) must leave the folder as it was."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return None
