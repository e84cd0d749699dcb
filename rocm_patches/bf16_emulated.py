"""bf16 on cards that only emulate it (gfx906: MI50 / MI60, Radeon VII, Hygon Z100 DCUs).

``torch.cuda.is_bf16_supported()`` answers True on every HIP device, so LLaMA-Factory's
automatic precision (``extras/misc.py``: ``_is_bf16_available``, read by
``infer_optim_dtype``) picks bf16 for a bf16 model on gfx906, which runs it in slow
emulation. The fix, on an architecture without native bf16: the automatic choice becomes
fp16, and an explicit ``bf16: true`` (or ``pure_bf16``) stops the run before the model
loads, naming the architecture and ``fp16: true``.
"""

from __future__ import annotations

from lfkit.amd_arch import native_bf16
from lfkit.errors import stop_run
from lfkit.flags import truthy
from lfkit.lf_versions import RANGE
from lfkit.patching import Patch, PatchContext, SkipPatch

from .arch_guard import amd_arch, needs, switched_on


def _apply(misc, ctx: PatchContext) -> str:
    arch = amd_arch()
    if not hasattr(misc, "_is_bf16_available"):
        raise SkipPatch("llamafactory.extras.misc no longer decides bf16 through _is_bf16_available")
    ctx.replace(misc, "_is_bf16_available", False)
    return f"{arch} has no native bf16: automatic precision is fp16"


PATCH = Patch(
    id="rocm-bf16-emulated",
    why="HIP reports bf16 support on every card; on gfx906 bf16 is only emulated, so automatic precision picks fp16",
    target="llamafactory.extras.misc",
    apply=_apply,
    reference="https://github.com/unslothai/unsloth/pull/7682 (the same arch check for RDNA2); "
    "https://rocm.docs.amd.com/projects/HIP/en/docs-6.3.2/reference/hardware_features.html",
    platforms=frozenset({"rocm", "dtk"}),
    requires=RANGE,
    condition=needs("native bf16", native_bf16),
)


def explicit_bf16_problem(args: dict) -> str | None:
    """Why an explicit bf16 request cannot run well here, or None."""
    asked = [key for key in ("bf16", "pure_bf16") if truthy(args.get(key))]
    if not asked:
        return None  # asked first: the architecture means importing torch
    arch = amd_arch()
    if not arch or not switched_on(PATCH):
        return None
    return (
        f"{asked[0]}: true, but {arch} has no native bf16 (it is emulated, and slow); use fp16: true "
        f"(drop {asked[0]}), or turn this check off with LFKIT_DISABLE_PATCHES={PATCH.id}"
    )


def stop_explicit_bf16(args: dict) -> None:
    problem = explicit_bf16_problem(args)
    if problem is not None:
        stop_run(problem)
