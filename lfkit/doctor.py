"""What `lfkit doctor` reports: platform, versions, activation, patches, plugins."""

from __future__ import annotations

import site
import sys
from pathlib import Path
from typing import Any

from . import __version__, problems
from .activation import is_active
from .patching import Status, distribution_version

PACKAGES = (
    "torch",
    "llamafactory",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "deepspeed",
    "bitsandbytes",
    "xformers",
    "pluggy",
)
PTH_NAME = "lfkit-autoload.pth"


def versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None where absent), without importing any of them."""
    return {name: distribution_version(name) for name in names}


def autoload_pth() -> Path | None:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    for folder in dirs:
        candidate = Path(folder) / PTH_NAME
        if candidate.is_file():
            return candidate
    return None


def activation_report() -> dict[str, Any]:
    import os

    pth = autoload_pth()
    opted_out = os.environ.get("LFKIT_AUTOLOAD", "1").strip().lower() in {"0", "false", "no", "off"}
    return {
        "autoload_pth": str(pth) if pth else None,
        "LFKIT_AUTOLOAD": os.environ.get("LFKIT_AUTOLOAD"),
        "autoload_on": bool(pth) and not opted_out,
        "activated_at_start": "lfkit._autoload" in sys.modules,
        "active_in_this_process": is_active(),
    }


def collect(manager, platform, bitsandbytes: dict[str, Any]) -> dict[str, Any]:
    """The report of ``platform`` (``detect_platform(with_gpus=True)``); ``bitsandbytes`` is the ROCm
    fixes' own section, which the CLI asks them for."""
    patches = []
    for state in manager.patches.states.values():
        entry = state.as_dict()
        if state.status is Status.WAITING:
            entry["detail"] = manager.patches.verdict(state)
        patches.append(entry)
    return {
        "lfkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.as_dict(),
        "versions": versions(),
        "activation": activation_report(),
        "patches": patches,
        "bitsandbytes": bitsandbytes,
        "plugins": [info.as_dict() for info in manager.plugins.values()],
        "problems": [problem.as_dict() for problem in problems.found()],
    }
