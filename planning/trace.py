"""A train step traced on fake tensors: the peak of every tensor it holds, transients included.

The formula of ``memory.py`` adds rows; this runs the step itself. The model class comes from
the folder's config.json, LLaMA-Factory prepares it as for training (its own
``prepare_model_for_training`` and ``init_adapter``: gradient checkpointing, the LoRA wrapping
and targets, trainable parameters upcast to float32), and two optimizer steps of the real loss
and AdamW run at the real micro-batch and sequence length, under PyTorch's ``FakeTensorMode``
(tensors with shapes and dtypes and no storage) on the fake CPU device, while
``torch.distributed._tools.mem_tracker.MemTracker`` follows every tensor's lifetime. The second
step is the steady state (the first has no optimizer states yet).

Decoder layers are identical, so one and two layers are traced and the rest extrapolated:
tracing all 28 layers of Qwen2-7B at 2048 tokens took 127 s, one and two layers 6 s and 9 s
here, and the extrapolation lands on the full trace. What a GPU adds beyond tensors (context,
the allocator's reserve) is in the plan's own rows; 4-bit / 8-bit layers and DeepSpeed cannot
be traced this way (bitsandbytes has no fake-tensor kernels, ZeRO needs its workers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError
from lfkit.flags import truthy

CATEGORIES = {
    "Parameter": "parameters",
    "Gradient": "gradients",
    "Optstate": "optimizer",
    "Activation": "activations",
    "Temp": "temporaries",
    "Buffer": "buffers",
    "Other": "other",
}


@dataclass
class Traced:
    """Peak bytes by kind of tensor for the model's layer count, and how they were found."""

    peak: int
    kinds: dict[str, int]
    layers: int
    traced_layers: tuple[int, ...]
    by_layers: dict[int, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak,
            "kinds": dict(self.kinds),
            "layers": self.layers,
            "traced_layers": list(self.traced_layers),
            "by_layers": {str(k): dict(v) for k, v in self.by_layers.items()},
        }


def _dtype_kwargs(dtype) -> dict:
    """``dtype`` as the installed transformers names it: 4.56 renamed ``torch_dtype`` to ``dtype``
    (transformers PR 39782; the old name warns from then on, the new one is unknown before)."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype": dtype}


def refusal(args: dict[str, Any]) -> str | None:
    """Why this step cannot be traced, or None."""
    if args.get("quantization_bit"):
        return "a quantized (QLoRA) step cannot be traced: bitsandbytes has no fake-tensor kernels"
    if args.get("deepspeed"):
        return "a DeepSpeed step cannot be traced: ZeRO splits its tensors over the workers"
    method = str(args.get("finetuning_type") or "lora")
    if method not in {"lora", "full", "freeze"}:
        return f"finetuning_type={method} cannot be traced"
    if importlib.util.find_spec("torch.distributed._tools.mem_tracker") is None:
        from lfkit.installed_dists import version

        return (
            f"--trace needs torch's MemTracker (torch.distributed._tools.mem_tracker), which torch "
            f"{version('torch')} does not have: lfkit plan without --trace answers from its formula"
        )
    return None


def _fields(cls, args: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in args.items() if k in names})


@contextlib.contextmanager
def _modules_stay_put():
    """peft moves new adapter weights with Module.to(), which cannot swap a fake parameter."""
    from torch import nn

    original = nn.Module.to
    nn.Module.to = lambda self, *a, **k: self
    try:
        yield
    finally:
        nn.Module.to = original


def _tracker():
    from torch.distributed._tools.mem_tracker import MemTracker

    class FrozenAwareTracker(MemTracker):
        """MemTracker hooks every parameter's gradient, which a frozen one (LoRA's base) cannot take."""

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            frozen = [p for p in module.parameters() if not p.requires_grad]
            handles = self._param_to_grad_hook_handles
            marked = [p for p in frozen if p not in handles]
            for p in marked:
                handles[p] = (None, None)
            try:
                return super()._track_module_params_and_buffers(module, install_grad_hooks)
            finally:
                for p in marked:
                    handles.pop(p, None)

    return FrozenAwareTracker()


def trace_layers(
    folder: str | Path, args: dict[str, Any], seq_len: int, micro_batch: int, layers: int, dtype: str, fake: bool = True
) -> dict[str, int]:
    """Peak bytes by kind of two train steps of the model in ``folder`` cut to ``layers`` layers.

    With ``fake=False`` the same step runs on real CPU tensors (a small model), which is how the
    tests show that fake tensors give the same bytes."""
    import torch
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from llamafactory.model.adapter import init_adapter
    from llamafactory.model.model_utils.checkpointing import prepare_model_for_training
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, AutoModelForCausalLM

    args = {**args, "model_name_or_path": str(folder)}
    model_args = _fields(ModelArguments, args)
    finetuning_args = _fields(FinetuningArguments, args)
    model_args.compute_dtype = getattr(torch, dtype)
    trust = truthy(args.get("trust_remote_code"))
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust)
    config.num_hidden_layers = layers
    config.use_cache = False
    attention = {"disabled": "eager", "eager": "eager", "fa2": "flash_attention_2"}.get(
        str(args.get("flash_attn") or "auto").lower(), "sdpa"
    )
    torch.manual_seed(0)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode:
        with _modules_stay_put() if fake else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_config(
                config,
                **_dtype_kwargs(model_args.compute_dtype),
                attn_implementation=attention,
                trust_remote_code=trust,
            )
            prepare_model_for_training(model, model_args)
            model = init_adapter(config, model, model_args, finetuning_args, is_trainable=True)
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=float(args.get("learning_rate") or 1e-4))
        ids = torch.randint(0, config.vocab_size, (micro_batch, seq_len))
        tracker = _tracker()
        tracker.track_external(model, optimizer)
        with tracker:
            for _ in range(2):  # the second step holds the optimizer states
                model(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                tracker.reset_mod_stats()
        peak = tracker.get_tracker_snapshot("peak")
    (snapshot,) = peak.values()
    kinds = {CATEGORIES.get(getattr(k, "value", k), str(k)): int(v) for k, v in snapshot.items() if k != "Total"}
    return {k: v for k, v in kinds.items() if v}


def trace(folder: str | Path, args: dict[str, Any], seq_len: int, micro_batch: int, layers: int, dtype: str) -> Traced:
    """The traced peak of the whole model: one and two layers traced, the others extrapolated."""
    why = refusal(args)
    if why:
        raise UsageError(why)
    found = {n: trace_layers(folder, args, seq_len, micro_batch, n, dtype) for n in (1, 2)}
    kinds = {}
    for kind in set(found[1]) | set(found[2]):
        one, two = found[1].get(kind, 0), found[2].get(kind, 0)
        kinds[kind] = max(0, one + (layers - 1) * (two - one))
    total_one, total_two = sum(found[1].values()), sum(found[2].values())
    peak = total_one + (layers - 1) * (total_two - total_one)
    return Traced(peak, kinds, layers, (1, 2), found)
