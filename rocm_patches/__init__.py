"""ROCm / DTK fixes, one module per fix, each registered as a declared lfkit.patching.Patch.

This package is a built-in plugin: its patches register through the same hook a
third-party plugin would use.
"""

from lfkit.hookspecs import hookimpl

from . import deepspeed_cuda_check

PATCHES = (deepspeed_cuda_check.PATCH,)


@hookimpl
def lfkit_register_patches(register):
    for patch in PATCHES:
        register(patch)
