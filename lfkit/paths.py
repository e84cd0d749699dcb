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
