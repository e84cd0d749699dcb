"""xFormers fallback for remote-code models such as Baichuan2 (DCU users gave up on Baichuan2 over it).

Baichuan2's modeling file does ``try: from xformers import ops as xops`` and, in
training only, calls ``xops.memory_efficient_attention(q, k, v,
attn_bias=xops.LowerTriangularMask())``. A CUDA-built xFormers imports fine on
ROCm; the first training step then fails with "No operator found for
memory_efficient_attention_forward ... operator wasn't built".

Using xFormers is the model's choice, not a need. Each time transformers loads a
remote-code module (LLaMA-Factory and a plain ``AutoModelForCausalLM.from_pretrained(
..., trust_remote_code=True)`` both go through ``get_class_in_module``), a module
holding an ``xops`` that cannot run on this device gets, instead:

- an ``xops`` backed by PyTorch's scaled_dot_product_attention
  (LowerTriangularMask -> causal; a tensor bias -> additive float mask), or
- ``xops = None`` where the module relies on ALiBi (early Baichuan2-13B passes
  LowerTriangularMask and would silently drop its ALiBi bias): its own attention
  path, which applies the bias, runs instead.
"""

from __future__ import annotations

import functools
import logging
import types

from lfkit.patching import Patch, PatchContext
from lfkit.remote_code import on_remote_class

logger = logging.getLogger("lfkit.rocm_patches.xformers")

# module name -> what was done, for tests and `lfkit patches` readers.
FALLBACKS: dict[str, str] = {}


class AttentionBias:
    pass


class LowerTriangularMask(AttentionBias):
    """Causal masking, as xformers.ops.LowerTriangularMask."""

    def add_bias(self, bias):
        return LowerTriangularMaskWithTensorBias(bias)


class LowerTriangularMaskWithTensorBias(LowerTriangularMask):
    def __init__(self, bias):
        self._bias = bias


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, op=None):
    """xformers' signature and layout ([batch, seq, heads, dim]), computed by torch SDPA."""
    import torch
    import torch.nn.functional as F

    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # -> [batch, heads, seq, dim]
    mask, causal = None, False
    if isinstance(attn_bias, LowerTriangularMaskWithTensorBias):
        q_len, k_len = q.shape[-2], k.shape[-2]
        upper = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
        mask = attn_bias._bias.to(q.dtype).masked_fill(upper, float("-inf"))
    elif isinstance(attn_bias, LowerTriangularMask) or _is_xformers_causal(attn_bias):
        causal = True
    elif isinstance(attn_bias, torch.Tensor):
        mask = attn_bias.to(q.dtype)  # additive float mask
    elif attn_bias is not None:
        raise NotImplementedError(f"lfkit's xformers fallback does not know attn_bias {type(attn_bias).__name__}")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal, scale=scale)
    return out.transpose(1, 2)


def _is_xformers_causal(bias) -> bool:
    # The module built its bias from the real xformers' class before we swapped xops.
    return type(bias).__name__ == "LowerTriangularMask"


SDPA_OPS = types.SimpleNamespace(
    memory_efficient_attention=memory_efficient_attention,
    LowerTriangularMask=LowerTriangularMask,
    LowerTriangularMaskWithTensorBias=LowerTriangularMaskWithTensorBias,
    AttentionBias=AttentionBias,
    __lfkit_fallback__=True,
)


@functools.lru_cache(maxsize=1)
def xformers_error() -> str | None:
    """Why xFormers' attention cannot run on this device, or None if it can. Runs it once."""
    import torch

    try:
        from xformers import ops as xops
    except Exception as exc:  # noqa: BLE001
        return f"xformers does not import: {type(exc).__name__}: {exc}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        q = torch.zeros(1, 4, 1, 8, device=device, dtype=torch.float16)
    except Exception:  # noqa: BLE001 - a device torch cannot allocate on cannot run xformers either
        q = torch.zeros(1, 4, 1, 8, dtype=torch.float16)
    try:
        xops.memory_efficient_attention(q, q, q, attn_bias=xops.LowerTriangularMask())
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def relies_on_alibi(module) -> bool:
    """Does this modeling module build an ALiBi bias (Baichuan2-13B's _gen_alibi_mask)?"""
    return any("alibi" in name.lower() and callable(getattr(module, name)) for name in vars(module))


def fix_module(module) -> str | None:
    """Swap the module's unusable xops; returns what was done, or None."""
    xops = getattr(module, "xops", None)
    if xops is None or getattr(xops, "__lfkit_fallback__", False):
        return None
    error = xformers_error()
    if error is None:
        return None
    if relies_on_alibi(module):
        module.xops = None
        action = "xops = None (the module relies on ALiBi, which LowerTriangularMask would drop)"
    else:
        module.xops = SDPA_OPS
        action = "xops backed by torch scaled_dot_product_attention"
    FALLBACKS[module.__name__] = action
    logger.warning("lfkit: xFormers cannot run here (%s); %s uses %s", error, module.__name__, action)
    return action


def _apply(dynamic_module_utils, ctx: PatchContext) -> str:
    def check(cls, module) -> None:
        if module is not None:
            fix_module(module)

    on_remote_class(dynamic_module_utils, ctx, check)
    return "checks each remote-code module that transformers loads"


PATCH = Patch(
    id="xformers-remote-code-fallback",
    why="a CUDA-built xFormers imports on ROCm but its kernels do not run: Baichuan2 training fails",
    target="transformers.dynamic_module_utils",
    apply=_apply,
    reference="https://github.com/ROCm/xformers; Baichuan2 modeling_baichuan.py (xops branch)",
    platforms=frozenset({"rocm", "dtk"}),
    requires={"transformers": ">=4.52,<5.7"},  # verified on 4.52.4 (the DCU stack), 4.57.3 and 5.6.0
    distribution="xformers",
)
