"""What `lfkit doctor` reports: platform, versions, the supported stack, activation, patches, plugins,
problems (lfkit's own, and known-broken combinations of installed packages)."""

from __future__ import annotations

import site
import sys
from pathlib import Path
from typing import Any

from . import __version__, known_broken, lf_versions, problems
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


def stack_report(found: dict[str, str | None], python: str) -> dict[str, Any]:
    """Which row of the support table (lf_versions.STACKS) these versions are in, and the line that says it."""
    found = {**found, "python": python}
    row, outside = lf_versions.stack_of(found)
    shown = " + ".join(
        f"{lf_versions.LABELS[part]} {found.get(part) or 'absent'}" for part in ("llamafactory", "torch", "python")
    )
    if row is None:
        line = f"{shown} — outside every supported row: {'; '.join(outside)}"
    else:
        # what CI tests the row with, less what the line already shows as installed here
        ci = [
            f"{lf_versions.LABELS.get(dist, dist)} {pin}"
            for dist, pin in row.ci.items()
            if dist not in ("llamafactory", "torch") or not lf_versions.same_version(found.get(dist), pin)
        ]
        tested = f"tested in CI with {' + '.join(ci)}" if ci else "the combination CI tests"
        line = f"{shown} — the {row.name} row ({tested})"
    return {
        "llamafactory": found.get("llamafactory"),
        "torch": found.get("torch"),
        "python": python,
        "row": row.as_dict() if row else None,
        "outside": outside,
        "line": line,
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
    found = versions()
    python = sys.version.split()[0]
    return {
        "lfkit": __version__,
        "python": python,
        "platform": platform.as_dict(),
        "versions": found,
        "stack": stack_report(found, python),
        "activation": activation_report(),
        "patches": patches,
        "bitsandbytes": bitsandbytes,
        "plugins": [info.as_dict() for info in manager.plugins.values()],
        "problems": [problem.as_dict() for problem in [*problems.found(), *known_broken.found(manager.patches)]],
    }
