"""ROCm / DTK fixes, one module per fix, each registered as a declared lfkit.patching.Patch.

This package is a built-in plugin: its patches register through the same hook a
third-party plugin would use.
"""

from lfkit.hookspecs import hookimpl

from . import bitsandbytes_pin, deepspeed_cuda_check, xformers_fallback

PATCHES = (deepspeed_cuda_check.PATCH, bitsandbytes_pin.PATCH, xformers_fallback.PATCH)


@hookimpl
def lfkit_register_patches(register):
    for patch in PATCHES:
        register(patch)


@hookimpl
def lfkit_prepare_args(command, args):
    bitsandbytes_pin.stop_unworkable_quantization(args)
