"""When a step does not fit: the cheapest single changes that make it fit, each with its estimate.

Cheapest first: changes that keep the training's result (a smaller micro-batch with more
accumulation keeps the global batch; gradient checkpointing only costs time), then
changes of method (LoRA, QLoRA where this platform's bitsandbytes has the bits), then
a shorter cutoff_len (drops tokens), then ZeRO-3 over more cards, with CPU offload last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfkit.flags import truthy

from .memory import Estimate


@dataclass
class Suggestion:
    change: dict[str, Any]  # key=value to add to the command line
    estimate: Estimate
    note: str = ""

    @property
    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.change.items())

    def as_dict(self) -> dict[str, Any]:
        out = {"change": self.text, "needed_bytes": self.estimate.needed}
        if self.note:
            out["note"] = self.note
        return out


def quantization_bits(platform_kind: str) -> tuple[int, ...]:
    """The bitsandbytes bits this platform can train with, from the table the bitsandbytes fix keeps
    (DTK's bitsandbytes ABI is 8-bit only)."""
    from lfkit.rocm_patches.bitsandbytes_pin import assess

    return (8, 4) if assess(platform_kind).four_bit else (8,)


def suggestions(
    args: dict[str, Any],
    lfkit_args: dict[str, Any],
    plan_with: Callable[[dict[str, Any], dict[str, Any]], Estimate],
    target: int,
    platform_kind: str,
) -> list[Suggestion]:
    """``plan_with(args, lfkit_args)`` estimates a variant; only variants within ``target`` are kept."""
    found: list[Suggestion] = []

    def attempt(change: dict[str, Any], own: dict[str, Any] | None = None, note: str = "") -> bool:
        estimate = plan_with({**args, **change}, {**lfkit_args, **(own or {})})
        if estimate.needed > target:
            return False
        found.append(Suggestion({**change, **(own or {})}, estimate, note))
        return True

    batch = int(args.get("per_device_train_batch_size") or 8)
    accumulation = int(args.get("gradient_accumulation_steps") or 1)
    smaller = batch // 2
    while smaller >= 1:  # the largest micro-batch that fits is the fastest
        if batch % smaller == 0 and attempt(
            {"per_device_train_batch_size": smaller, "gradient_accumulation_steps": accumulation * batch // smaller}
        ):
            break
        smaller //= 2
    if truthy(args.get("disable_gradient_checkpointing")):
        attempt({"disable_gradient_checkpointing": False})
    method = str(args.get("finetuning_type") or "lora")
    if method in ("full", "freeze"):
        attempt({"finetuning_type": "lora"})
    if not args.get("quantization_bit"):
        for bits in quantization_bits(platform_kind):
            if attempt({"finetuning_type": "lora", "quantization_bit": bits}):
                break
    cutoff = int(args.get("cutoff_len") or 2048)
    shorter = cutoff // 2
    while shorter >= 128:
        if attempt({"cutoff_len": shorter}, note="longer samples are cut"):
            break
        shorter //= 2
    if not args.get("deepspeed"):
        offload_note = "CPU offload needs DeepSpeed's CPUAdam op, which does not build on some ROCm versions"
        for cards in (2, 4, 8):
            if attempt({"deepspeed": "z3"}, {"nproc_per_node": cards}, f"{cards} cards"):
                break
        else:
            for cards in (1, 2, 4, 8):
                if attempt({"deepspeed": "z3-offload"}, {"nproc_per_node": cards}, offload_note):
                    break
    return found
