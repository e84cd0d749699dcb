"""DeepSpeed ZeRO by name: ``deepspeed=z0|z2|z2-offload|z3|z3-offload`` or a path to the user's own JSON.

The presets ship inside lfkit (LLaMA-Factory's examples/deepspeed files are not in its
wheel). Every config is checked before anything starts: that it parses, that
DeepSpeed's own schema accepts its ZeRO section, and that fixed batch numbers agree
with the run's arguments (transformers would stop on a mismatch only after the
model has loaded, on every worker).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS = ("z0", "z2", "z2-offload", "z3", "z3-offload")
# DeepSpeed key -> the run argument it must equal when it is a number, not "auto".
_MATCHING = {
    "train_micro_batch_size_per_gpu": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
}


def preset_path(name: str) -> Path:
    return PRESET_DIR / f"{name}.json"


def config_path(value: str) -> Path:
    """A preset name or a JSON path to the file it means; one line when there is none."""
    if value in PRESETS:
        return preset_path(value)
    path = Path(value).expanduser()
    if path.suffix.lower() != ".json" and not path.exists():
        raise UsageError(f"deepspeed={value}: not a preset ({', '.join(PRESETS)}) nor a JSON file")
    if path.is_dir():
        raise UsageError(
            f"deepspeed={value} is a folder; give a DeepSpeed JSON file or a preset ({', '.join(PRESETS)})"
        )
    if not path.is_file():
        raise UsageError(f"deepspeed={value}: no such file")
    return path.resolve()


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"deepspeed={path}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"deepspeed={path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"deepspeed={path}: expected a JSON object")
    return data


def check_config(path: Path, config: dict[str, Any], args: dict[str, Any]) -> None:
    """DeepSpeed's schema for the ZeRO section ("auto" left to transformers), then our own agreement checks."""
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise UsageError(f"deepspeed={path}: zero_optimization must be an object")
    stage = zero.get("stage", 0)
    if stage != "auto" and (isinstance(stage, bool) or stage not in (0, 1, 2, 3)):
        # (DeepSpeed's own message for this names the enum twice: "0, 1, 2, 3 or 3")
        raise UsageError(
            f"deepspeed={path}: zero_optimization.stage is {json.dumps(stage)}; ZeRO stages are 0, 1, 2 and 3"
        )
    for part in ("offload_optimizer", "offload_param"):
        offload = zero.get(part)
        if isinstance(offload, dict) and offload.get("device") == "nvme" and not offload.get("nvme_path"):
            raise UsageError(
                f"deepspeed={path}: zero_optimization.{part} offloads to nvme but gives no nvme_path "
                "(a folder on a fast local disk)"
            )
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    try:
        parsed = DeepSpeedZeroConfig(**{k: v for k, v in zero.items() if v != "auto"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise UsageError(f"deepspeed={path}: zero_optimization.{where}: {first.get('msg')}") from None
    stage = int(parsed.stage)
    if zero.get("offload_param") and stage != 3:
        raise UsageError(f"deepspeed={path}: offload_param needs ZeRO stage 3 (stage is {stage}); DeepSpeed ignores it")
    if zero.get("offload_optimizer") and stage == 0:
        raise UsageError(f"deepspeed={path}: offload_optimizer needs ZeRO stage 1 or more (stage is 0)")
    for ds_key, arg in _MATCHING.items():
        value = config.get(ds_key, "auto")
        if value != "auto" and arg in args and value != args[arg]:
            raise UsageError(
                f'deepspeed={path}: {ds_key}={value} but {arg}={args[arg]}; make them equal or write "auto"'
            )


def resolve(value: str, args: dict[str, Any]) -> str:
    """The absolute path LLaMA-Factory gets for ``deepspeed=value``, after the checks."""
    path = config_path(str(value))
    check_config(path, read_config(path), args)
    return str(path)
