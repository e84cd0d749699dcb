"""Multi-worker training on the CPU with torch < 2.2: accelerate asks torch.cpu for a device it never had.

accelerate 1.x gives every torchrun worker its device through ``getattr(torch, kind).set_device``;
for CPU workers that is ``torch.cpu.set_device``, which torch added in 2.2 (pytorch PR 110716).
On torch 2.1, the torch of DTK 23.10 and DTK 24.04, ``FORCE_TORCHRUN=1 llamafactory-cli train`` on
a CPU (a login node's smoke test, a CPU partition) dies in every worker before the model loads:
``AttributeError: module 'torch.cpu' has no attribute 'set_device'``. There is one CPU device, so
there is nothing to select: the fix gives CPU workers the device accelerate would have set (``cpu:0``)
and leaves every other kind of device to accelerate.
"""

from __future__ import annotations

from lfkit.installed_dists import version
from lfkit.lf_versions import release
from lfkit.patching import Patch, PatchContext, SkipPatch

# torch.cpu.set_device: added in torch 2.2 (pytorch PR 110716)
FIRST_TORCH_WITH_IT = (2, 2)


def nothing_to_fix() -> str | None:
    torch = release(version("torch"))
    if torch is None:
        return "torch is not installed"
    if torch[:2] >= FIRST_TORCH_WITH_IT:
        return f"torch {version('torch')} has torch.cpu.set_device"
    return None


def _apply(state, ctx: PatchContext) -> str:
    import torch

    if hasattr(torch.cpu, "set_device"):
        raise SkipPatch(f"torch {torch.__version__} has torch.cpu.set_device")
    partial = state.PartialState
    original = partial.set_device
    multi_cpu = state.DistributedType.MULTI_CPU

    def set_device(self):
        if self.device is None and self.distributed_type == multi_cpu:
            # as accelerate does on a torch that has it: the worker's index among the CPU devices (one)
            self.device = torch.device("cpu", self.local_process_index % torch.cpu.device_count())
            return
        return original(self)

    ctx.replace(partial, "set_device", set_device)
    return "CPU torchrun workers get their device without torch.cpu.set_device (it came with torch 2.2)"


PATCH = Patch(
    id="accelerate-cpu-device",
    why="accelerate calls torch.cpu.set_device for CPU torchrun workers; torch < 2.2 has none",
    target="accelerate.state",
    apply=_apply,
    reference="https://github.com/pytorch/pytorch/pull/110716 (torch.cpu.set_device, torch 2.2); "
    "accelerate state.py PartialState.set_device",
    # every platform: a DTK or ROCm torch on a node without a card runs its workers on the CPU too
    # Verified on accelerate 1.7.0, the newest LLaMA-Factory 0.9.3 takes, the only LLaMA-Factory lfkit
    # supports on torch < 2.2; on a newer torch there is nothing to fix whatever accelerate does.
    condition=nothing_to_fix,
)
