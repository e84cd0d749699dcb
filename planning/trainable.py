"""Which parameters a train step trains, following LLaMA-Factory's own rules (model/adapter.py).

- full: every parameter;
- freeze: every parameter of the last ``freeze_trainable_layers`` layers (the first ones when
  negative) whose name holds one of ``freeze_trainable_modules``, plus ``freeze_extra_modules``;
- lora: adapters A (rank x in) and B (out x rank) on each targeted Linear, a magnitude vector
  (out) more with DoRA; ``lora_target=all`` is every Linear but the output layer; modules named
  in ``additional_target`` are trained whole, as a copy beside the frozen original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lfkit.flags import truthy

from .shapes import ModelShape, Tensor


@dataclass
class Training:
    method: str
    frozen: list[Tensor]  # the model's own parameters that stay as loaded
    trainable: list[Tensor]  # what the optimizer updates (adapters included)
    quantizable: list[Tensor]  # frozen Linear weights, which QLoRA stores quantized

    @property
    def trainable_numel(self) -> int:
        return sum(t.numel for t in self.trainable)


def split_list(value: Any, default: list[str]) -> list[str]:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _matches(module: str, key: str) -> bool:
    # peft's rule for target_modules / modules_to_save given as names
    return module == key or module.endswith("." + key)


def lora_targets(shape: ModelShape, args: dict[str, Any]) -> list[str]:
    """The module paths LoRA wraps."""
    linear = shape.linear_modules()
    keys = split_list(args.get("lora_target"), ["all"])
    if keys == ["all"]:
        allowed = {
            path.rpartition(".")[2]
            for path in linear
            if not any(excluded in path for excluded in shape.excluded_from_lora)
        }
        keys = sorted(allowed)
    return [path for path in linear if any(_matches(path, key) for key in keys)]


def _freeze_trainable(shape: ModelShape, args: dict[str, Any]) -> set[str]:
    count = int(args.get("freeze_trainable_layers", 2))
    layers = shape.layers
    if count > 0:
        ids = range(max(0, layers - count), layers)
    else:
        ids = range(min(-count, layers))
    modules = split_list(args.get("freeze_trainable_modules"), ["all"])
    marks = [f".{i}.{'' if m == 'all' else m}" for i in ids for m in modules]
    marks += split_list(args.get("freeze_extra_modules"), [])
    return {t.name for t in shape.tensors if any(mark in t.name for mark in marks)}


def training(shape: ModelShape, args: dict[str, Any]) -> Training:
    method = str(args.get("finetuning_type") or "lora")
    tensors = shape.tensors
    if method == "full":
        return Training(method, [], list(tensors), [])
    if method == "freeze":
        names = _freeze_trainable(shape, args)
        frozen = [t for t in tensors if t.name not in names]
        return Training(method, frozen, [t for t in tensors if t.name in names], [t for t in frozen if t.linear])
    linear = shape.linear_modules()
    rank = int(args.get("lora_rank", 8))
    adapters: list[Tensor] = []
    for path in lora_targets(shape, args):
        fan_in, fan_out = linear[path]
        adapters.append(Tensor(f"{path}.lora_A.default.weight", (rank, fan_in)))
        adapters.append(Tensor(f"{path}.lora_B.default.weight", (fan_out, rank)))
        if truthy(args.get("use_dora")):
            adapters.append(Tensor(f"{path}.lora_magnitude_vector.default.weight", (fan_out,)))
    extra = split_list(args.get("additional_target"), [])
    copies = [
        Tensor(f"{t.module}.modules_to_save.default.{t.name.rpartition('.')[2]}", t.shape)
        for t in tensors
        if any(_matches(t.module, key) for key in extra)
    ]
    # peft keeps the original of a module_to_save (frozen) beside its trained copy
    quantizable = [t for t in tensors if t.linear and not any(_matches(t.module, key) for key in extra)]
    quantizable = [t for t in quantizable if not any(excluded in t.name for excluded in shape.excluded_from_lora)]
    return Training(method, list(tensors), adapters + copies, quantizable)
