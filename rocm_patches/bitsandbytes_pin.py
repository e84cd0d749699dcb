"""bitsandbytes on ROCm and DTK: which build works, hiding one that cannot, and a clear stop for quantization.

The DCU field guide lost LoRA itself (no quantization asked) to a bitsandbytes that could not
load on DTK: peft imports bitsandbytes whenever it is installed. The fix was to
uninstall it and pin 0.38.1. lfkit does that without touching the installation:

- ``assess()`` compares the installed bitsandbytes with the table below, from its
  version and the native libraries it ships, without importing it;
- the ``bitsandbytes-hide-unusable`` patch, on ROCm and DTK, makes an unusable
  bitsandbytes invisible to peft, transformers, accelerate and LLaMA-Factory
  (``sys.modules["bitsandbytes"] = None``: find_spec answers None, import raises
  ModuleNotFoundError), so plain LoRA keeps working;
- ``stop_unworkable_quantization`` (from lfkit_prepare_args) stops a run that asks for bitsandbytes quantization
  there, before the model loads, with one line and the pin command.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from lfkit.errors import stop_run
from lfkit.patching import Patch, PatchContext, SkipPatch, Status, distribution_version

DIST = "bitsandbytes"
DTK_PIN = "0.38.1"
# The ROCm libraries each known release ships (read from the PyPI wheels).
ROCM_WHEELS = {
    "0.50.2": ("6.4", "7.0", "7.1", "7.2", "7.14", "7.15"),
    "0.49.2": ("6.2", "6.3", "6.4", "7.0", "7.1", "7.2"),
}
# LLaMA-Factory 0.9.5, model/model_utils/quantization.py
CUDA_FLOOR = {8: "0.37.0", 4: "0.39.0"}

PIN_TABLE = (
    {
        "platform": "dtk",
        "bitsandbytes": f"=={DTK_PIN}",
        "quantization": "8-bit only, no 4-bit",
        "source": "the DCU field guide: on DTK 23.10, `pip install bitsandbytes==0.38.1` made LoRA work; "
        "0.38.1 also imports triton.ops, which triton 3 removed",
    },
    {
        "platform": "rocm",
        "bitsandbytes": "a wheel that ships libbitsandbytes_rocmXY for the runtime's X.Y: "
        + "; ".join(f"{v}: ROCm {', '.join(libs)}" for v, libs in ROCM_WHEELS.items()),
        "quantization": "4-bit and 8-bit",
        "source": "bitsandbytes wheels on PyPI (file lists of 0.49.2 and 0.50.2); ROCm support since 0.49",
    },
    {
        "platform": "cuda",
        "bitsandbytes": f">={CUDA_FLOOR[4]} (8-bit: >={CUDA_FLOOR[8]})",
        "quantization": "4-bit and 8-bit",
        "source": "LLaMA-Factory 0.9.5 model/model_utils/quantization.py",
    },
)


@dataclass
class Assessment:
    platform: str
    installed: str | None
    fits: bool | None  # None: nothing to decide (no GPU)
    reason: str
    pin: str | None  # the command that installs what fits, if any
    four_bit: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _pip(requirement: str) -> str:
    return f'pip install "bitsandbytes{requirement}"'


def shipped_rocm_libraries() -> list[str]:
    """'6.4'-style versions of the libbitsandbytes_rocmXY the installed package ships (from its RECORD)."""
    from importlib import metadata

    try:
        files = metadata.distribution(DIST).files or []
    except metadata.PackageNotFoundError:
        return []
    versions = set()
    for file in files:
        match = re.match(r"libbitsandbytes_rocm(\d)(\d+)", Path(str(file)).name)
        if match:
            versions.add(f"{match.group(1)}.{match.group(2)}")
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def _rocm_pin(runtime: str) -> str | None:
    for release, libs in ROCM_WHEELS.items():  # newest first
        if runtime in libs:
            return _pip(f"=={release}")
    return None


def assess(platform_kind: str | None = None, hip: tuple[int, int] | None = None) -> Assessment:
    """Does the installed bitsandbytes fit this platform? Reads files and metadata only."""
    from packaging.version import Version

    from lfkit.platform_detect import detect_platform

    from .toolkit import hip_version_tuple

    platform_kind = platform_kind or detect_platform().kind
    installed = distribution_version(DIST)

    if platform_kind == "dtk":
        pin = _pip(f"=={DTK_PIN}")
        if installed is None:
            return Assessment("dtk", None, False, "bitsandbytes is not installed", pin, four_bit=False)
        if installed != DTK_PIN:
            return Assessment(
                "dtk",
                installed,
                False,
                f"bitsandbytes {installed} has no DTK build; DTK takes the {DTK_PIN} ABI",
                pin,
                four_bit=False,
            )
        triton = distribution_version("triton")
        if triton is not None and Version(triton).major >= 3:
            reason = (
                f"bitsandbytes {DTK_PIN} imports triton.ops, which triton {triton} removed; use DTK's own triton 2.x"
            )
            return Assessment(
                "dtk",
                installed,
                False,
                reason,
                "pip uninstall -y triton  # then install the DTK build of triton 2.x",
                four_bit=False,
            )
        return Assessment("dtk", installed, True, f"the {DTK_PIN} ABI, 8-bit only", pin, four_bit=False)

    if platform_kind == "rocm":
        hip = hip or hip_version_tuple()
        runtime = f"{hip[0]}.{hip[1]}" if hip else "unknown"
        pin = _rocm_pin(runtime)
        if installed is None:
            return Assessment("rocm", None, False, "bitsandbytes is not installed", pin)
        shipped = shipped_rocm_libraries()
        if runtime in shipped:
            return Assessment("rocm", installed, True, f"ships libbitsandbytes_rocm{runtime.replace('.', '')}", pin)
        have = ", ".join(shipped) if shipped else "none"
        reason = f"bitsandbytes {installed} ships no library for ROCm {runtime} (ROCm libraries: {have})"
        if pin is None:
            reason += "; no released wheel does: build ROCm/bitsandbytes from source or move to ROCm 6.2+"
        return Assessment("rocm", installed, False, reason, pin)

    if platform_kind == "cuda":
        pin = _pip(f">={CUDA_FLOOR[4]}")
        if installed is None:
            return Assessment("cuda", None, False, "bitsandbytes is not installed", pin)
        if Version(installed) < Version(CUDA_FLOOR[4]):
            return Assessment(
                "cuda",
                installed,
                False,
                f"LLaMA-Factory needs >={CUDA_FLOOR[4]} for 4-bit, >={CUDA_FLOOR[8]} for 8-bit",
                pin,
            )
        return Assessment("cuda", installed, True, "within LLaMA-Factory's ranges", pin)

    return Assessment(platform_kind, installed, None, "no GPU: bitsandbytes quantization does not apply", None)


# --- hiding -------------------------------------------------------------------------

_hidden: dict[str, str] = {}


def must_hide(verdict: Assessment) -> bool:
    """The one rule: on ROCm/DTK an installed bitsandbytes that does not fit is hidden."""
    return verdict.platform in ("rocm", "dtk") and verdict.installed is not None and verdict.fits is False


def doctor_report(platform_kind: str, patch_state) -> dict:
    """`lfkit doctor`'s bitsandbytes section: the verdict, the pin, and whether processes hide it."""
    verdict = assess(platform_kind)
    report = verdict.as_dict()
    # This process may not have imported transformers yet: say what every LLaMA-Factory process will do.
    live = patch_state is not None and patch_state.status is not Status.DISABLED
    report["hidden"] = DIST in _hidden or (live and must_hide(verdict))
    report["table"] = PIN_TABLE
    return report


def _hide(_module, ctx: PatchContext) -> str:
    if DIST in sys.modules:
        raise SkipPatch("bitsandbytes was imported before lfkit could check it")
    verdict = assess()
    if verdict.installed is None:
        raise SkipPatch("bitsandbytes is not installed")
    if not must_hide(verdict):
        raise SkipPatch(f"bitsandbytes {verdict.installed} fits: {verdict.reason}")
    ctx.setitem(sys.modules, DIST, None)
    ctx.setitem(_hidden, DIST, verdict.reason)
    # transformers < 5 asks find_spec once, when it is imported (what this patch waits for), and keeps the
    # answer: without this its is_bitsandbytes_available() would still say yes (transformers 4.52, DTK's stack).
    import_utils = sys.modules.get("transformers.utils.import_utils")
    if getattr(import_utils, "_bitsandbytes_available", False) is True:
        ctx.replace(import_utils, "_bitsandbytes_available", False)
    return f"hid bitsandbytes {verdict.installed}: {verdict.reason}"


PATCH = Patch(
    id="bitsandbytes-hide-unusable",
    why="an installed bitsandbytes that cannot load on ROCm/DTK breaks plain LoRA (peft imports it)",
    # transformers is imported before peft, accelerate's bnb paths and LLaMA-Factory look;
    # waiting for it (not torch) also lets a test simulate ROCm right after `import torch`.
    target="transformers",
    apply=_hide,
    reference="https://github.com/bitsandbytes-foundation/bitsandbytes (ROCm builds); DTK: bitsandbytes==0.38.1",
    platforms=frozenset({"rocm", "dtk"}),
    distribution=DIST,
)


# --- a clear stop for quantization ----------------------------------------------------


def quantization_problem(args: dict) -> str | None:
    """Why this run's bitsandbytes quantization cannot work here, or None."""
    bits = args.get("quantization_bit")
    method = str(args.get("quantization_method", "bnb")).lower()
    if bits in (None, "", "null", "None") or method not in ("bnb", "bitsandbytes"):
        return None
    try:
        bits = int(bits)
    except (TypeError, ValueError):
        return None
    from lfkit.platform_detect import detect_platform

    kind = detect_platform().kind
    if kind not in ("rocm", "dtk"):
        return None
    verdict = assess(kind)
    if kind == "dtk" and bits == 4:
        return (
            "4-bit bitsandbytes quantization cannot work on DTK (the 0.38.1 ABI is 8-bit only): "
            f"use quantization_bit: 8 with {_pip(f'=={DTK_PIN}')}, or plain LoRA (drop quantization_bit)"
        )
    if verdict.fits:
        return None
    fix = f"; fix: {verdict.pin}" if verdict.pin else ""
    return (
        f"quantization_bit: {bits} needs bitsandbytes, which cannot work here: {verdict.reason}{fix}; "
        "or drop quantization_bit for plain LoRA"
    )


def stop_unworkable_quantization(args: dict) -> None:
    """Called from lfkit_prepare_args (rocm_patches' plugin)."""
    problem = quantization_problem(args)
    if problem is not None:
        # One line and exit 2 in LLaMA-Factory's own process, before any model is loaded.
        stop_run(problem)
