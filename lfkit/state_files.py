"""Reading lfkit's own state files in every Python process, safely.

The dataset registry and the caches under $LFKIT_HOME are read when torch is imported,
in every process of the environment. A FIFO there would block the start for ever,
``/dev/zero`` or a huge sparse file would eat the memory: so only a regular file of a
sane size is read, through a descriptor opened without blocking, and at most ``limit``
bytes of it. (A home on a hung network file system still blocks the stat; nothing here can
help that.)
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

# The registry of a few thousand datasets is well under a megabyte; caches are smaller.
STATE_LIMIT = 16 * 2**20
# A model folder's tokenizer.json of a large vocabulary is tens of megabytes.
MODEL_FILE_LIMIT = 64 * 2**20


class NotAStateFile(OSError):
    """The path exists but is not something lfkit reads: not a regular file, or too large."""


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """A descriptor of ``path`` and its fstat, where it is a regular file; NotAStateFile otherwise."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a device can act (a tty, a tape)
        raise NotAStateFile(0, "not a regular file", str(path))
    # non-blocking and no controlling terminal, in case it was swapped for a FIFO or a tty since the stat
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAStateFile(0, "not a regular file", str(path))
    return fd, info


def read_bounded(path: Path, limit: int = STATE_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. FileNotFoundError where there is none,
    NotAStateFile (an OSError, with ``strerror`` in words) for anything else found there."""
    fd, info = _open_regular(path)
    try:
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


def read_json_bounded(path: Path, limit: int = STATE_LIMIT) -> Any:
    """The JSON in a regular file of at most ``limit`` bytes. OSError where there is no such file
    (FileNotFoundError, NotAStateFile), ValueError where it is not JSON: not UTF-8, cut short, or
    nested too deeply for the parser."""
    text = read_text_bounded(path, limit)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def read_tail_bounded(path: Path, size: int) -> bytes:
    """The last ``size`` bytes of a regular file (a log that grows for days); the errors of read_bounded."""
    fd, info = _open_regular(path)
    try:
        return os.pread(fd, size, max(0, info.st_size - size))
    finally:
        os.close(fd)


def number(value: Any) -> float | None:
    """A figure read from a record: an int or a finite float (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
