"""``expandable_segments`` for LLaMA-Factory's torchrun workers on HIP builds that do not support it.

LLaMA-Factory (``cli.py`` in 0.9.3, ``launcher.py`` from 0.9.4) replaces ``PYTORCH_CUDA_ALLOC_CONF``
with ``expandable_segments:True`` for every torchrun launch (``OPTIM_TORCH``, on by default),
dropping whatever the user had set there. HIP builds read ``PYTORCH_CUDA_ALLOC_CONF`` first,
then ``PYTORCH_HIP_ALLOC_CONF``, then ``PYTORCH_ALLOC_CONF`` (c10/cuda/CUDAAllocatorConfig.h),
so the user's HIP settings are lost too. Expandable segments on HIP landed in PyTorch 2.11
and only for ROCm 7.0 and later; before that the option is unsupported and hangs are
reported. The fix, where it is unsupported: the workers get the user's own allocator
settings, with only ``expandable_segments`` taken out of each variable.
"""

from __future__ import annotations

import os

from lfkit.lf_versions import RANGE, torchrun_module
from lfkit.patching import Overlay, Patch, PatchContext, SkipPatch

VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
OPTION = "expandable_segments"


def unsupported_reason() -> str | None:
    """Why this HIP build cannot use expandable segments, or None when it can."""
    from packaging.version import Version

    from lfkit.platform_detect import detect_platform

    platform = detect_platform()
    hip = platform.hip_version or "0"
    try:
        hip_major = int(str(hip).split(".")[0])
    except ValueError:
        hip_major = 0
    torch_base = Version(str(platform.torch_version or "0").split("+")[0]).release[:2]
    if torch_base < (2, 11):
        return f"torch {platform.torch_version} has no expandable segments on HIP (added in 2.11)"
    if hip_major < 7:
        return f"HIP {hip} is below ROCm 7.0, where PyTorch disables expandable segments"
    return None


def without_option(value: str) -> str:
    """The allocator settings without expandable_segments; the others in their order."""
    kept = [part.strip() for part in value.split(",") if part.strip() and part.split(":")[0].strip() != OPTION]
    return ",".join(kept)


def workers_env(env: dict, user_env: dict) -> dict:
    """The launcher's environment for torchrun, with the user's allocator settings back, minus the option."""
    env = dict(env)
    for variable in VARIABLES:
        # LLaMA-Factory overwrote PYTORCH_CUDA_ALLOC_CONF; the user's own value is in user_env
        value = user_env.get(variable) if variable == VARIABLES[0] else env.get(variable)
        cleaned = without_option(value) if value else ""
        if cleaned:
            env[variable] = cleaned
        else:
            env.pop(variable, None)
    return env


def _apply(launcher, ctx: PatchContext) -> str:
    reason = unsupported_reason()
    if not hasattr(launcher, "subprocess"):
        raise SkipPatch(f"{launcher.__name__} does not start torchrun through subprocess")
    inner = launcher.subprocess

    def run(cmd, *args, **kwargs):
        if kwargs.get("env") is not None:
            kwargs["env"] = workers_env(kwargs["env"], dict(os.environ))
        return inner.run(cmd, *args, **kwargs)

    ctx.replace(launcher, "subprocess", Overlay(inner, run=run))
    return f"{reason}: torchrun workers get the user's allocator settings without {OPTION}"


PATCH = Patch(
    id="rocm-expandable-segments",
    why="LLaMA-Factory sets expandable_segments:True for torchrun workers; HIP has it from torch 2.11 with ROCm 7.0",
    target=torchrun_module(),
    apply=_apply,
    reference="https://github.com/pytorch/pytorch/pull/177974 (HIP support, torch 2.11); "
    "https://github.com/pytorch/pytorch/pull/179930 (ROCm >= 7.0 only)",
    platforms=frozenset({"rocm", "dtk"}),
    requires=RANGE,
    condition=lambda: None if unsupported_reason() else "this torch and HIP support expandable segments",
)
