"""DeepSpeed ZeRO offload on ROCm / DTK: its CPUAdam op, checked before training starts.

With ``offload_optimizer`` in the DeepSpeed config, accelerate swaps the run's optimizer for
DeepSpeed's CPUAdam, whose C++ op DeepSpeed builds just in time, in every worker, after the
model has loaded; on several ROCm / DeepSpeed combinations that build fails (DeepSpeed
issues 4768 and 5274). The fix: before anything loads, lfkit asks DeepSpeed's own op
builder whether the op is installed, or compatible and buildable (building it once, which
also fills the cache the workers load from). If it is not, the run stops with one line that
names what works: ZeRO without offload, or offload with the run's own torch optimizer
(``"zero_force_ds_cpu_optimizer": false`` in the DeepSpeed config).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from lfkit.errors import stop_run
from lfkit.patching import Patch, PatchContext, SkipPatch, distribution_version

from .arch_guard import switched_on


def _apply(_builder, ctx: PatchContext) -> str:
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get("cpu_adam"):
        raise SkipPatch("this DeepSpeed was installed with its CPUAdam op built")
    return "ZeRO offload runs check that DeepSpeed's CPUAdam op builds before training starts"


PATCH = Patch(
    id="deepspeed-rocm-cpu-adam",
    why="ZeRO offload needs DeepSpeed's CPUAdam op, which does not build on several ROCm / DeepSpeed versions",
    target="deepspeed.ops.op_builder.builder",
    apply=_apply,
    reference="https://github.com/deepspeedai/DeepSpeed/issues/4768; https://github.com/deepspeedai/DeepSpeed/issues/5274",
    platforms=frozenset({"rocm", "dtk"}),
    requires={"deepspeed": ">=0.14,<0.20"},
)


def _zero_config(value) -> dict:
    from lfkit.errors import UsageError
    from lfkit.launching.deepspeed import config_path, read_config

    try:
        return read_config(config_path(str(value)))
    except UsageError:
        return {}  # an unreadable config is reported by the deepspeed checks of the run


def offloads_optimizer(config: dict) -> bool:
    device = ((config.get("zero_optimization") or {}).get("offload_optimizer") or {}).get("device", "none")
    return str(device).lower() in {"cpu", "nvme"} and config.get("zero_force_ds_cpu_optimizer", True) is not False


def cpu_adam_unusable() -> str | None:
    """Why DeepSpeed's CPUAdam op can be neither loaded nor built here, or None."""
    # torch's extension builder logs its CUDA_HOME guess at import (torch 2.1 prints it, and warns that
    # pkg_resources is deprecated), DeepSpeed's builder runs rocminfo in a shell: the answer is one line
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _stderr_to_devnull():
            warnings.simplefilter("ignore")
            return _unusable()
    finally:
        quiet.setLevel(level)


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 (this process's and its children's) to /dev/null for the while."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _unusable() -> str | None:
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get("cpu_adam"):
        return None
    from deepspeed.ops.op_builder import CPUAdamBuilder

    version = distribution_version("deepspeed")
    builder = CPUAdamBuilder()
    if not builder.is_compatible(verbose=False):
        return f"DeepSpeed {version} says is not compatible with this system"
    try:
        builder.load(verbose=False)
    except Exception as exc:  # noqa: BLE001 - every way a build fails is the finding
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return f"does not build with DeepSpeed {version} ({(lines[-1] if lines else type(exc).__name__)[:160]})"
    return None


def cpu_adam_problem(args: dict) -> str | None:
    value = args.get("deepspeed")
    if not value or not switched_on(PATCH) or os.environ.get("LOCAL_RANK") is not None:
        return None  # a torchrun worker: the process that launched it checked already
    config = _zero_config(value)
    if not offloads_optimizer(config):
        return None
    reason = cpu_adam_unusable()
    if reason is None:
        return None
    return (
        f"deepspeed={value}: ZeRO offload needs DeepSpeed's CPUAdam op, which {reason}; use ZeRO without offload "
        "(deepspeed=z2 or z3, over more cards), or keep offload with the run's torch optimizer: "
        '"zero_force_ds_cpu_optimizer": false in your DeepSpeed JSON'
    )


def stop_unbuildable_cpu_adam(args: dict) -> None:
    problem = cpu_adam_problem(args)
    if problem is not None:
        stop_run(problem)
