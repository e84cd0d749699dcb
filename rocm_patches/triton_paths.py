"""Triton-based paths on gfx906 (Vega20: MI50 / MI60, Radeon VII, Hygon Z100 DCUs).

``enable_liger_kernel``, ``torch_compile`` and ``use_unsloth`` compile Triton kernels, and
Triton's AMD backend does not support gfx906: the run loads the model and then fails in
the compiler. The fix: on such a card a run that asks for them stops before the model
loads, with one line naming the switch to drop.
"""

from __future__ import annotations

from lfkit.amd_arch import triton_supported
from lfkit.errors import stop_run
from lfkit.flags import truthy
from lfkit.lf_versions import RANGE
from lfkit.patching import Patch, PatchContext

from .arch_guard import amd_arch, needs, switched_on

SWITCHES = ("enable_liger_kernel", "torch_compile", "use_unsloth")


def _apply(parser, ctx: PatchContext) -> str:
    arch = amd_arch()
    return f"{arch}: runs asking for {', '.join(SWITCHES)} stop before the model loads"


PATCH = Patch(
    id="rocm-triton-gfx906",
    why="Liger kernels, torch.compile and Unsloth need Triton, which does not support gfx906",
    target="llamafactory.hparams.parser",
    apply=_apply,
    reference="https://github.com/triton-lang/triton/issues/8992 (gfx906 not a Triton target); "
    "https://github.com/vllm-project/vllm/pull/33811",
    platforms=frozenset({"rocm", "dtk"}),
    requires=RANGE,
    condition=needs("Triton support", triton_supported),
)


def triton_problem(args: dict) -> str | None:
    asked = [key for key in SWITCHES if truthy(args.get(key))]
    if not asked:
        return None  # asked first: the architecture means importing torch
    arch = amd_arch()
    if not arch or not switched_on(PATCH):
        return None
    return f"{asked[0]}: true needs Triton, which does not support {arch}; drop {asked[0]} for this card"


def stop_triton_paths(args: dict) -> None:
    problem = triton_problem(args)
    if problem is not None:
        stop_run(problem)
