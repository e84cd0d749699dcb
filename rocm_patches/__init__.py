"""ROCm / DTK fixes, and fixes for the older libraries a DTK stack holds: one module per fix, each
registered as a declared lfkit.patching.Patch.

This package is a built-in plugin: its patches register through the same hook a
third-party plugin would use.
"""

from lfkit.hookspecs import hookimpl

from . import (
    accelerate_cpu_device,
    bf16_emulated,
    bitsandbytes_pin,
    deepspeed_cpu_adam,
    deepspeed_cuda_check,
    expandable_segments,
    flash_attn_arch,
    transformers_dtensor,
    triton_paths,
    xformers_fallback,
)

PATCHES = (
    deepspeed_cuda_check.PATCH,
    bitsandbytes_pin.PATCH,
    xformers_fallback.PATCH,
    bf16_emulated.PATCH,
    expandable_segments.PATCH,
    flash_attn_arch.PATCH,
    triton_paths.PATCH,
    deepspeed_cpu_adam.PATCH,
    transformers_dtensor.PATCH,
    accelerate_cpu_device.PATCH,
)


@hookimpl
def lfkit_register_patches(register):
    for patch in PATCHES:
        register(patch)


@hookimpl
def lfkit_prepare_args(command, args):
    """Runs that cannot work on this card stop here, before a model loads: one line, exit 2."""
    bitsandbytes_pin.stop_unworkable_quantization(args)
    if command == "train":
        bf16_emulated.stop_explicit_bf16(args)
        triton_paths.stop_triton_paths(args)
        deepspeed_cpu_adam.stop_unbuildable_cpu_adam(args)
