"""Reading lfkit's own state files in every Python process, safely.

The dataset registry and the caches under $LFKIT_HOME are read when torch is imported,
in every process of the environment. A FIFO there would block the start for ever,
``/dev/zero`` or a huge sparse file would eat the memory: so only a regular file of a
sane size is read, through a descriptor opened without blocking, and at most ``limit``
bytes of it. (A home on a hung network file system still blocks the stat; nothing here can
help that.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# The registry of a few thousand datasets is well under a megabyte; caches are smaller.
STATE_LIMIT = 16 * 2**20


class NotAStateFile(OSError):
    """The path exists but is not something lfkit reads: not a regular file, or too large."""


def read_bounded(path: Path, limit: int = STATE_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. FileNotFoundError where there is none,
    NotAStateFile (an OSError, with ``strerror`` in words) for anything else found there."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a device can act (a tty, a tape)
        raise NotAStateFile(0, "not a regular file", str(path))
    # non-blocking and no controlling terminal, in case it was swapped for a FIFO or a tty since the stat
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAStateFile(0, "not a regular file", str(path))
        if info.st_size > limit:
            raise NotAStateFile(0, f"{info.st_size:,} bytes, more than the {limit:,} bytes lfkit reads", str(path))
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # it grew after fstat
            raise NotAStateFile(0, f"more than the {limit:,} bytes lfkit reads", str(path))
        return data
    finally:
        os.close(fd)


def read_text_bounded(path: Path, limit: int = STATE_LIMIT) -> str:
    return read_bounded(path, limit).decode("utf-8")
