"""What an AMD / Hygon GPU architecture (its gfx name) can do, for the fixes that depend on it.

Hygon's Z100-class DCUs report gfx906, like the MI50 / MI60 and the Radeon VII (Vega20).
"""

from __future__ import annotations

# bf16 in hardware (matrix cores or WMMA): CDNA1 (MI100) and later, RDNA3 and later. Vega20
# (gfx906) and RDNA1/2 only emulate it, although torch.cuda.is_bf16_supported() says True on
# every HIP device.
_NATIVE_BF16 = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12")
# flash-attention's ROCm backend builds for MI200 (gfx90a) and MI300 (gfx942) class parts,
# and MI350 (gfx950) in recent releases.
_FLASH_ATTN = ("gfx90a", "gfx942", "gfx950")
# Triton's AMD backend (behind torch.compile and the Liger kernels) targets CDNA and RDNA3+;
# Vega / gfx906 is not supported.
_NO_TRITON = ("gfx900", "gfx906", "gfx8")


def base(arch: str | None) -> str:
    """'gfx906:sramecc+:xnack-' -> 'gfx906'."""
    return (arch or "").split(":")[0].strip().lower()


def native_bf16(arch: str | None) -> bool | None:
    """None when the architecture is not known."""
    name = base(arch)
    return name.startswith(_NATIVE_BF16) if name else None


def flash_attn_supported(arch: str | None) -> bool | None:
    name = base(arch)
    return name.startswith(_FLASH_ATTN) if name else None


def triton_supported(arch: str | None) -> bool | None:
    name = base(arch)
    return not name.startswith(_NO_TRITON) if name else None
