"""flash-attention on AMD architectures its ROCm backend does not build for.

With the flash-attn package installed and ``flash_attn: auto`` or ``fa2``, LLaMA-Factory asks
transformers for ``flash_attention_2`` wherever the package imports, and training fails in
the kernel on any AMD card but the MI200 / MI300 class ("FlashAttention only supports AMD
MI200 GPUs or newer"). The fix, on such an architecture: SDPA instead, said once in the log
and kept in this patch's status (run.json's ``patches``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging

from lfkit.amd_arch import flash_attn_supported
from lfkit.lf_versions import RANGE
from lfkit.patching import Patch, PatchContext

from .arch_guard import amd_arch, needs

logger = logging.getLogger("lfkit")


def _apply(attention, ctx: PatchContext) -> str:
    arch = amd_arch()
    from llamafactory.extras.constants import AttentionFunction

    original = attention.configure_attn_implementation
    said = []

    @functools.wraps(original)
    def configure_attn_implementation(config, model_args):
        if model_args.flash_attn in (AttentionFunction.AUTO, AttentionFunction.FA2):
            if not said:
                logger.warning(
                    "lfkit: flash-attention does not support %s (MI200 / MI300 class only); using SDPA", arch
                )
                said.append(True)
            model_args.flash_attn = AttentionFunction.SDPA
        return original(config, model_args)

    ctx.replace_everywhere(attention, "configure_attn_implementation", configure_attn_implementation, "llamafactory")
    return f"{arch}: flash_attn auto / fa2 -> sdpa (flash-attention supports MI200 / MI300 only)"


PATCH = Patch(
    id="rocm-flash-attn-arch",
    why="flash-attn installed but unsupported on this AMD architecture: attention falls back to SDPA",
    target="llamafactory.model.model_utils.attention",
    apply=_apply,
    reference="https://github.com/ROCm/flash-attention (MI200 / MI300 only); "
    "https://github.com/vllm-project/vllm/pull/33811 (no flash-attention build for gfx906)",
    platforms=frozenset({"rocm", "dtk"}),
    requires=RANGE,
    condition=lambda: needs("flash-attention support", flash_attn_supported)() or _no_package(),
)


def _no_package() -> str | None:
    return None if importlib.util.find_spec("flash_attn") is not None else "the flash-attn package is not installed"
