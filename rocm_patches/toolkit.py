"""Finding the ROCm / DTK toolkit that a pip-installed HIP torch does not know about.

torch looks for ROCM_HOME, ROCM_PATH, hipcc on PATH and /opt/rocm, at import time;
a DTK whose env script was not sourced lives in /opt/dtk, where nothing looks.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_ROOTS = ("/opt/dtk", "/opt/rocm")


def _looks_like_toolkit(path: Path) -> bool:
    return (path / "bin" / "hipcc").exists() or (path / ".info" / "version").is_file()


def find_rocm_toolkit(default_roots: tuple[str, ...] = DEFAULT_ROOTS) -> tuple[Path, str] | None:
    """The toolkit folder and how it was found, or None."""
    for var in ("ROCM_HOME", "ROCM_PATH", "DTK_PATH"):
        value = os.environ.get(var)
        if value and Path(value).is_dir():
            return Path(value), f"${var}"
    hipcc = shutil.which("hipcc")
    if hipcc:
        root = Path(hipcc).resolve().parent.parent
        return root, f"hipcc on PATH ({hipcc})"
    for candidate in default_roots:
        path = Path(candidate)
        if path.is_dir() and _looks_like_toolkit(path):
            return path, candidate
    return None


def hip_version_tuple() -> tuple[int, int] | None:
    """(major, minor) of the HIP runtime torch was built with, e.g. '6.2.41133' -> (6, 2)."""
    import torch

    hip = getattr(torch.version, "hip", None)
    if not hip:
        return None
    parts = str(hip).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return None


def gpu_arch() -> str:
    """gfx name of device 0 as torch reports it ('gfx90a'), or ''."""
    import torch

    try:
        name = getattr(torch.cuda.get_device_properties(0), "gcnArchName", "") or ""
    except Exception:  # noqa: BLE001 - no device, no driver: no answer
        return ""
    return name.split(":")[0]
