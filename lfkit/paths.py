"""Where lfkit keeps its own state (cached tiny models, registry state, runs)."""

from __future__ import annotations

import os
from pathlib import Path


def lfkit_home() -> Path:
    """LFKIT_HOME, else the per-user data folder ($XDG_DATA_HOME/lfkit or ~/.local/share/lfkit)."""
    explicit = os.environ.get("LFKIT_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lfkit"


def may_write_home() -> bool:
    """Whether a process that did not ask for it (a plain Python start keeping a cache) may create lfkit's
    folders: LFKIT_HOME is an absolute path, or the folder the default home sits in already exists. A
    relative LFKIT_HOME would land in whatever folder the user stands in; a HOME that does not exist
    would be created."""
    explicit = os.environ.get("LFKIT_HOME")
    if explicit:
        return Path(explicit).expanduser().is_absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg).is_absolute() and Path(xdg).is_dir()
    try:
        return Path.home().is_dir()
    except RuntimeError:  # no HOME and no password entry
        return False
