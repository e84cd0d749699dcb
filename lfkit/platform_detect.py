"""Which accelerator stack this process runs on: cuda, rocm, dtk or cpu, and why.

Read from torch each time it is asked, never cached: a patch decides at the moment
it applies, and a test can simulate ROCm by setting ``torch.version.hip``.
``LFKIT_SIMULATE`` (lfkit.simulation) answers for another platform without asking torch.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .state_files import read_text_bounded

_DTK_IN_TORCH = re.compile(r"dtk(\d{2})(\d{2})")


@dataclass
class Platform:
    kind: str  # cuda | rocm | dtk | cpu
    reason: str
    torch_version: str | None = None
    cuda_version: str | None = None
    hip_version: str | None = None
    dtk_version: str | None = None
    dtk_root: str | None = None
    gpus: list[dict] = field(default_factory=list)
    arch: str | None = None  # AMD gfx name of device 0 (rocm / dtk)
    native_bf16: bool | None = None  # rocm / dtk: whether that architecture has bf16 in hardware
    simulated: str | None = None  # the LFKIT_SIMULATE value this answer comes from

    def as_dict(self) -> dict:
        return asdict(self)


def dtk_root() -> Path | None:
    """The DTK toolkit folder: DTK_PATH, a ROCM_PATH that is a DTK, or /opt/dtk."""
    for var in ("DTK_PATH", "ROCM_PATH"):
        value = os.environ.get(var)
        if value and "dtk" in Path(value).name.lower() and Path(value).is_dir():
            return Path(value)
    default = Path("/opt/dtk")
    return default if default.is_dir() else None


def _dtk_version(torch_version: str, root: Path | None) -> str | None:
    match = _DTK_IN_TORCH.search(torch_version)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    if root is not None:
        for candidate in (root / ".info" / "version", root / "version"):
            try:  # read in every process that imports torch: a few bytes, or nothing
                text = read_text_bounded(candidate, 4096)
            except (OSError, UnicodeDecodeError):
                continue
            return text.strip() or None
    return None


def _simulated_platform(sim, with_gpus: bool) -> Platform:
    from .amd_arch import native_bf16
    from .simulation import CARD_GIB, ENV

    try:
        import torch

        torch_version = str(torch.__version__)
    except ImportError:
        torch_version = None
    reason = f"simulated by {ENV}={sim.text}; the real device is not touched"
    platform = Platform(sim.kind, reason, torch_version, simulated=sim.text)
    if sim.kind == "cuda":
        platform.cuda_version = "12.4"
    if sim.kind in ("rocm", "dtk"):
        platform.hip_version, platform.arch, platform.native_bf16 = sim.hip, sim.arch, native_bf16(sim.arch)
        if sim.kind == "dtk":
            platform.dtk_version = "24.04"
    if with_gpus and sim.kind != "cpu":
        platform.gpus = [{"index": 0, "name": f"simulated {sim.arch or 'CUDA GPU'}", "memory_gib": CARD_GIB,
                          "memory_bytes": int(CARD_GIB * 2**30), "arch": sim.arch}]  # fmt: skip
    return platform


class TorchNotLoaded(Exception):
    """The answer needs torch imported (a HIP build's architecture), and this is a preview that must not."""


_PREVIEW = threading.local()


@contextlib.contextmanager
def without_importing_torch() -> Iterator[None]:
    """Answer from torch's version file while torch is not imported (`lfkit patches` in 0.3 s, not
    3 s); where only torch itself can answer, raise TorchNotLoaded instead of importing it."""
    before = getattr(_PREVIEW, "on", False)
    _PREVIEW.on = True
    try:
        yield
    finally:
        _PREVIEW.on = before


def torch_build() -> dict[str, str | None] | None:
    """version, cuda and hip of the installed torch, read from its version.py without importing it."""
    try:
        spec = importlib.util.find_spec("torch")
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
        values = {}
        for node in ast.parse(text).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and isinstance(getattr(node, "value", None), ast.Constant):
                values[target.id] = node.value.value
    except (ImportError, AttributeError, StopIteration, TypeError, ValueError, OSError, SyntaxError):
        return None
    return {"version": values.get("__version__"), "cuda": values.get("cuda"), "hip": values.get("hip")}


def _from_build() -> Platform:
    build = torch_build()
    if build is None:
        raise TorchNotLoaded("torch's version file cannot be read")
    if build["hip"]:
        raise TorchNotLoaded("a HIP build: the GPU architecture needs torch")
    version, cuda = build["version"], build["cuda"]
    if cuda and any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/dxg")):
        return Platform(
            "cuda", f"torch {version} built for CUDA {cuda}, and an NVIDIA driver is present", version, cuda
        )
    if cuda:
        why = f"torch built for CUDA {cuda}, but no CUDA device is visible (no NVIDIA driver)"
        return Platform("cpu", why, version, cuda)
    return Platform("cpu", "torch has no CUDA or HIP build", version)


def _surely_cpu() -> Platform | None:
    """This machine's answer without importing torch where it cannot be anything but cpu: torch not
    loaded yet, not a HIP build, and no GPU driver to see a device through (a login node)."""
    if "torch" in sys.modules:
        return None
    try:
        platform = _from_build()
    except TorchNotLoaded:
        return None
    return platform if platform.kind == "cpu" else None


def detect_platform(with_gpus: bool = False) -> Platform:
    from .simulation import simulated

    sim = simulated()
    if sim is not None:
        return _simulated_platform(sim, with_gpus)
    if getattr(_PREVIEW, "on", False) and "torch" not in sys.modules:
        return _from_build()
    cpu = _surely_cpu()
    if cpu is not None:
        return cpu
    try:
        import torch
    except ImportError:
        return Platform("cpu", "torch is not installed")

    version = str(torch.__version__)
    hip = getattr(torch.version, "hip", None)
    cuda = getattr(torch.version, "cuda", None)
    if hip:
        root = dtk_root()
        if "dtk" in version.lower():
            kind, reason = "dtk", f"torch {version} is a DTK build (torch.version.hip={hip})"
        elif root is not None:
            kind, reason = "dtk", f"torch.version.hip={hip} and a DTK toolkit at {root}"
        else:
            kind, reason = "rocm", f"torch.version.hip={hip}"
        platform = Platform(kind, reason, version, None, str(hip))
        if kind == "dtk":
            platform.dtk_root = str(root) if root else None
            platform.dtk_version = _dtk_version(version, root)
        from .amd_arch import base, native_bf16

        platform.arch = base(_device_arch(torch)) or None
        platform.native_bf16 = native_bf16(platform.arch)
    elif cuda and torch.cuda.is_available():
        platform = Platform("cuda", f"torch.version.cuda={cuda} and a CUDA device is visible", version, str(cuda))
    elif cuda:
        platform = Platform("cpu", f"torch built for CUDA {cuda}, but no CUDA device is visible", version, str(cuda))
    else:
        platform = Platform("cpu", "torch has no CUDA or HIP build", version)

    if with_gpus and platform.kind != "cpu":
        platform.gpus = _gpus(torch)
    return platform


def _device_arch(torch) -> str:
    try:
        if torch.cuda.is_available() and torch.cuda.device_count():
            return getattr(torch.cuda.get_device_properties(0), "gcnArchName", "") or ""
    except Exception:  # noqa: BLE001 - no device, no driver: no answer
        pass
    return ""


def _gpus(torch) -> list[dict]:
    gpus = []
    try:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "memory_bytes": int(props.total_memory),
                    "arch": getattr(props, "gcnArchName", None),
                }
            )
    except Exception as exc:  # noqa: BLE001 - a broken driver is a finding, not a crash
        gpus.append({"error": f"{type(exc).__name__}: {exc}"})
    return gpus
