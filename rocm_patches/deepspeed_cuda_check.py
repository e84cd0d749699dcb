"""DeepSpeed's CUDA-mismatch check, bypassed on HIP torch (what DCU users did by hand-editing builder.py).

On a HIP torch whose toolkit DeepSpeed cannot find (ROCM_HOME unset: pip-installed
ROCm torch, or DTK without its env script), ``OpBuilder.is_rocm_pytorch()`` answers
False, so DeepSpeed takes the CUDA path: ``installed_cuda_version()`` raises
MissingCUDAException ("CUDA_HOME does not exist") from the op scan of
``import deepspeed`` (<= 0.18), from ``ds_report`` and from JIT builds, and code
reading ``torch.version.cuda`` (None on HIP) raises AttributeError.

The fix, applied when deepspeed.ops.op_builder.builder is imported:
- find the toolkit and hand it to torch (cpp_extension.ROCM_HOME) and to DeepSpeed
  (ROCM_HOME / ROCM_PATH in the environment);
- set DeepSpeed's cached "is this ROCm" answer to what torch says (hip is set);
- make assert_no_cuda_mismatch pass under HIP, and installed_cuda_version answer
  with the HIP version, also in the op-builder modules that imported it by name;
- the ROCm version from torch's HIP version where the toolkit has none (or is a
  DTK, whose .info/version is the DTK release, not the HIP one);
- the GPU architecture from torch when rocminfo is missing, and wavefront size 64
  on gfx9 / DCU parts, where DeepSpeed falls back to 32.
"""

from __future__ import annotations

import functools
import os

from lfkit.patching import Patch, PatchContext

from .toolkit import find_rocm_toolkit, gpu_arch, hip_version_tuple

SCOPE = "deepspeed.ops.op_builder"


def _is_hip() -> bool:
    import torch

    return bool(getattr(torch.version, "hip", None))


def _wavefront_for(arch: str, platform_kind: str) -> str | None:
    # gfx9 (GCN / CDNA: MI50..MI300) and every Hygon DCU run 64-wide wavefronts;
    # RDNA (gfx10+) runs 32.
    if arch.startswith("gfx9") or (not arch and platform_kind == "dtk"):
        return "64"
    return None


def apply(builder, ctx: PatchContext) -> None:
    import torch.utils.cpp_extension as cpp_extension

    from lfkit.platform_detect import detect_platform

    platform_kind = detect_platform().kind
    found = find_rocm_toolkit()
    if found is not None:
        root = str(found[0])
        if cpp_extension.ROCM_HOME is None:
            ctx.replace(cpp_extension, "ROCM_HOME", root)
        for var in ("ROCM_HOME", "ROCM_PATH"):
            if not os.environ.get(var):
                ctx.setenv(var, root)

    op_builder = builder.OpBuilder
    ctx.replace(op_builder, "_is_rocm_pytorch", True)

    hip = hip_version_tuple()
    version_file_missing = found is None or not (found[0] / ".info" / "version").is_file()
    if hip is not None and (platform_kind == "dtk" or version_file_missing):
        ctx.replace(op_builder, "_rocm_version", hip)

    original_installed = builder.installed_cuda_version
    original_assert = builder.assert_no_cuda_mismatch

    @functools.wraps(original_installed)
    def installed_cuda_version(name=""):
        if _is_hip() and hip is not None:
            return hip
        return original_installed(name)

    @functools.wraps(original_assert)
    def assert_no_cuda_mismatch(name=""):
        if _is_hip():
            return True
        return original_assert(name)

    ctx.replace_everywhere(builder, "installed_cuda_version", installed_cuda_version, SCOPE)
    ctx.replace_everywhere(builder, "assert_no_cuda_mismatch", assert_no_cuda_mismatch, SCOPE)

    original_arch = op_builder.get_rocm_gpu_arch
    original_wavefront = op_builder.get_rocm_wavefront_size

    def get_rocm_gpu_arch():
        return original_arch() or gpu_arch()

    def get_rocm_wavefront_size():
        size = original_wavefront()
        if size == "32":
            better = _wavefront_for(op_builder.get_rocm_gpu_arch(), platform_kind)
            if better is not None:
                op_builder._rocm_wavefront_size = size = better
        return size

    ctx.replace(op_builder, "get_rocm_gpu_arch", staticmethod(get_rocm_gpu_arch))
    ctx.replace(op_builder, "get_rocm_wavefront_size", staticmethod(get_rocm_wavefront_size))


def revert_caches(builder) -> None:
    # Values DeepSpeed cached while the patch was live were computed with its help.
    builder.OpBuilder._rocm_wavefront_size = None
    builder.OpBuilder._rocm_gpu_arch = None


PATCH = Patch(
    id="deepspeed-rocm-cuda-check",
    why="DeepSpeed takes the CUDA path on HIP torch without ROCM_HOME and raises MissingCUDAException",
    target="deepspeed.ops.op_builder.builder",
    apply=apply,
    reference="https://github.com/deepspeedai/DeepSpeed/issues/7452",
    platforms=frozenset({"rocm", "dtk"}),
    requires={"deepspeed": ">=0.14,<0.20"},
    on_revert=revert_caches,
)
