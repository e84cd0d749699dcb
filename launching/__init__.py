"""Launching a training step on many workers: LLaMA-Factory's own torchrun launcher, DeepSpeed ZeRO presets,
and each worker's patch statuses for run.json.

This package is a built-in plugin: its torchrun patch registers through the same
hook a third-party plugin would use.
"""

from lfkit.hookspecs import hookimpl

from . import torchrun


@hookimpl
def lfkit_register_patches(register):
    register(torchrun.PATCH)
