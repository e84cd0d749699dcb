"""What a real train step holds, measured in the step's own process, for run.json beside the plan.

A TrainerCallback, added only when the runner asks for it (``LFKIT_MEMORY_REPORT`` names
the step folder) and only on rank 0: the bytes of the frozen and trainable parameters,
of the gradients just before the first optimizer step, of the optimizer states after it,
and on a GPU the allocator's peak over the whole run.
"""

from __future__ import annotations

import os
from pathlib import Path

REPORT_ENV = "LFKIT_MEMORY_REPORT"
REPORT_FILE = ".lfkit-memory.json"


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def callbacks() -> list:
    folder = os.environ.get(REPORT_ENV)
    if not folder or os.environ.get("RANK", "0") != "0":
        return []
    from transformers import TrainerCallback

    from lfkit.atomic import write_json

    class TensorBytes(TrainerCallback):
        def __init__(self) -> None:
            self.measured: dict[str, int] = {}

        def _write(self) -> None:
            try:
                write_json(Path(folder) / REPORT_FILE, self.measured)
            except OSError:
                pass  # a record beside the run (a full disk): never the reason a training run stops

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if "gradients" in self.measured or model is None:
                return
            params = list(model.parameters())
            self.measured["weights"] = _bytes(p for p in params if not p.requires_grad)
            self.measured["trainable"] = _bytes(p for p in params if p.requires_grad)
            self.measured["gradients"] = _bytes(p.grad for p in params if p.grad is not None)

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            if "optimizer" in self.measured or optimizer is None:
                return
            import torch

            states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
            self.measured["optimizer"] = _bytes(states)
            self._write()

        def on_train_end(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available():
                self.measured["peak_allocated"] = int(torch.cuda.max_memory_allocated())
                self.measured["device_total"] = int(torch.cuda.get_device_properties(0).total_memory)
            self._write()

    return [TensorBytes()]
