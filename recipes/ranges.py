"""Values of the right type can still make no sense: a negative epoch count, a batch of 0.

LLaMA-Factory and transformers accept many of these and then train nothing (rc 0),
or fail after the model has loaded, with a traceback. These checks run while the
plan is resolved, before anything loads, in --dry-run too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Rule = tuple[Callable[[Any], bool], str]

_POSITIVE: Rule = (lambda v: v > 0, "must be greater than 0")
_AT_LEAST_ONE: Rule = (lambda v: v >= 1, "must be 1 or more")
_NOT_NEGATIVE: Rule = (lambda v: v >= 0, "must be 0 or more")
_FRACTION: Rule = (lambda v: 0 <= v <= 1, "must lie between 0 and 1")
_DROPOUT: Rule = (lambda v: 0 <= v < 1, "must be at least 0 and below 1")

RULES: dict[str, Rule] = {
    "num_train_epochs": _POSITIVE,
    # transformers turns max_steps into a C long (OverflowError past it)
    "max_steps": (lambda v: v == -1 or 1 <= v <= 2**31 - 1, "must be 1 to 2147483647, or -1 for no limit"),
    # numpy's seed range: transformers' set_seed passes it to np.random.seed, which refuses the rest
    "seed": (lambda v: 0 <= v <= 2**32 - 1, "must be 0 to 4294967295 (numpy's seed range)"),
    "data_seed": (lambda v: 0 <= v <= 2**32 - 1, "must be 0 to 4294967295 (numpy's seed range)"),
    "learning_rate": _POSITIVE,
    "per_device_train_batch_size": _AT_LEAST_ONE,
    "per_device_eval_batch_size": _AT_LEAST_ONE,
    "gradient_accumulation_steps": _AT_LEAST_ONE,
    "cutoff_len": _AT_LEAST_ONE,
    "lora_rank": _AT_LEAST_ONE,
    "lora_alpha": _AT_LEAST_ONE,
    "lora_dropout": _DROPOUT,
    "logging_steps": _POSITIVE,
    "save_steps": _POSITIVE,
    "eval_steps": _POSITIVE,
    "save_total_limit": _AT_LEAST_ONE,
    "warmup_ratio": _FRACTION,
    "warmup_steps": _NOT_NEGATIVE,
    "weight_decay": _NOT_NEGATIVE,
    "max_grad_norm": _NOT_NEGATIVE,
    "val_size": _NOT_NEGATIVE,
    "max_samples": _AT_LEAST_ONE,
    "max_new_tokens": _AT_LEAST_ONE,
    "num_beams": _AT_LEAST_ONE,
    "temperature": _POSITIVE,
    "top_p": (lambda v: 0 < v <= 1, "must be above 0 and at most 1"),
    "top_k": _NOT_NEGATIVE,
    "export_size": _AT_LEAST_ONE,
    "loraplus_lr_ratio": _POSITIVE,
    "batch_size": _AT_LEAST_ONE,
    "nproc_per_node": _AT_LEAST_ONE,
    "nnodes": _AT_LEAST_ONE,
    "node_rank": _NOT_NEGATIVE,
    "master_port": (lambda v: 1 <= v <= 65535, "must be a TCP port, 1 to 65535"),
}


def range_error(key: str, value: Any) -> str | None:
    """Why ``value`` is out of range for ``key`` (already of the right type), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key}={value!r} must be a finite number"  # YAML reads .inf / .nan, Python "inf" / "nan"
    rule = RULES.get(key)
    if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    ok, text = rule
    return None if ok(value) else f"{key}={value!r} {text}"
