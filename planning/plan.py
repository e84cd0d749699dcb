"""The memory plan of a resolved run: for each train step, the estimate, the target and what to change.

The target is the visible device's memory, or ``gpu_memory=16GiB`` given by hand (on a
login node without GPUs, or for a Slurm job). Without either, the plan is made for this
CPU machine and has no verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError

from .fit import Fit, what_fits
from .memory import GIB, READING_ROWS, Estimate, estimate
from .sequence import longest_sample
from .shapes import ModelShape, model_shape, read_config
from .suggest import Suggestion, suggestions

# The preflight stops a step only when its estimate is more than this much above the target:
# the estimate's measured error is within it, and a false refusal costs more than a tight run.
MARGIN = 0.10
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """'16GiB', '16G', '16GB' (read as GiB, as cards are sold), '16384M' -> bytes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0 or value == float("inf"):
            raise UsageError(f"gpu_memory={value}: must be a size above 0")
        return int(value * GIB)
    match = _SIZE.match(str(value))
    if not match:
        raise UsageError(f"gpu_memory={value}: give a size such as 16GiB, 16G or 32768M")
    number, unit = float(match.group(1)), match.group(2).upper()
    size = int(number * {"": GIB, "K": 2**10, "M": 2**20, "G": GIB, "T": 2**40}[unit])
    if size <= 0:
        raise UsageError(f"gpu_memory={value}: must be above 0")
    return size


@dataclass
class StepPlan:
    step: str
    estimate: Estimate
    target: int | None
    target_source: str
    shape: ModelShape
    suggestions: list[Suggestion] = field(default_factory=list)
    fit: Fit | None = None
    traced: Any = None  # planning.trace.Traced, with --trace

    def _traced(self, rows: tuple[str, ...]) -> int:
        """With a trace: the traced tensors, and the formula's allocator rows scaled to them."""
        e = self.estimate
        scale = self.traced.peak / e.tensors if e.tensors else 0
        scaled = sum(int(e.rows[k] * scale) for k in rows if k in ("fragmentation", "cached"))
        return self.traced.peak + sum(e.rows[k] for k in rows if k in ("overhead", "lengths")) + scaled

    @property
    def needed(self) -> int:
        """What must be free on the card: the formula's, or the traced tensors with the formula's GPU rows."""
        if self.traced is None:
            return self.estimate.needed
        return self._traced(("overhead", "fragmentation"))

    @property
    def reading(self) -> int:
        """What nvidia-smi / rocm-smi will show at the peak (cached blocks included)."""
        if self.traced is None:
            return self.estimate.reading
        return self._traced(("overhead", "fragmentation", "cached", "lengths"))

    @property
    def answered_by(self) -> str:
        return "trace" if self.traced is not None else "formula"

    @property
    def fits(self) -> bool | None:
        return None if self.target is None else self.needed <= self.target

    @property
    def refused(self) -> bool:
        return self.target is not None and self.needed > self.target * (1 + MARGIN)

    def as_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "step": self.step,
            "needed_bytes": self.needed,
            "reading_bytes": self.reading,
            "answered_by": self.answered_by,
            "formula_needed_bytes": e.needed,
            "formula_reading_bytes": e.reading,
            "target_bytes": self.target,
            "target_source": self.target_source,
            "fits": self.fits,
            "rows": {k: v for k, v in e.rows.items() if k not in READING_ROWS},
            "reading_rows": {k: e.rows[k] for k in READING_ROWS},
            "assumes": e.setting.as_dict(),
            "sequence": {"tokens": e.setting.seq_len, "source": e.setting.seq_source},
            "parameters": dict(e.parameters),
            "model": self.shape.as_dict(),
            "notes": list(e.notes),
            "suggestions": [s.as_dict() for s in self.suggestions],
            **({"fit": self.fit.as_dict()} if self.fit else {}),
            **({"trace": self.traced.as_dict()} if self.traced is not None else {}),
        }


def _target(lfkit_args: dict[str, Any], devices: int | None) -> tuple[int | None, str, str]:
    """(bytes, where from, device kind) for a step."""
    given = lfkit_args.get("gpu_memory")
    if given not in (None, ""):
        return parse_size(given), f"gpu_memory={given}", "gpu"
    from lfkit.platform_detect import detect_platform

    gpus = [g for g in detect_platform(with_gpus=True).gpus if "memory_bytes" in g]
    if gpus:
        smallest = min(gpus, key=lambda g: g["memory_bytes"])
        return smallest["memory_bytes"], f"GPU {smallest['index']} ({smallest['name']})", "gpu"
    if devices:  # a Slurm job's cards, memory unknown here
        return None, "unknown (give gpu_memory=)", "gpu"
    return None, "none (no GPU here; give gpu_memory= to plan for one)", "cpu"


def has_target(lfkit_args: dict[str, Any], devices: int | None) -> bool:
    """Whether a step has a card to be held against, without planning it."""
    if lfkit_args.get("gpu_memory") not in (None, ""):
        return True
    from lfkit.recipes.resolve import visible_devices

    return visible_devices() > 0 or bool(devices)


def _position_limit(folder: str) -> int | None:
    """The longest sequence the model's config.json states (None where it states none)."""
    config = read_config(Path(folder))
    for section in (config.get("text_config"), config):
        if isinstance(section, dict):
            for key in ("max_position_embeddings", "seq_length", "model_max_length"):
                if isinstance(section.get(key), int) and section[key] > 0:
                    return section[key]
    return None


def plan_step(
    step, devices: int | None = None, platform_kind: str | None = None, fit: bool = False, trace: bool = False
) -> StepPlan:
    """The plan of one resolved train step (lfkit.recipes.resolve.ResolvedStep); with ``fit``, also the
    longest sequence and the largest micro-batch that fit the target; with ``trace``, the step traced on
    fake tensors answers instead of the formula (planning/trace.py)."""
    args, own = step.args, step.lfkit_args
    target, source, device = _target(own, devices)
    if fit and target is None:
        raise UsageError(f"step {step.name}: --fit needs a card to fit: give gpu_memory= (e.g. gpu_memory=16GiB)")
    shape = model_shape(args["model_name_or_path"])
    lengths = longest_sample(args, step.datasets)
    tokens, how = lengths.tokens, lengths.source

    def plan_with(variant: dict[str, Any], variant_own: dict[str, Any], seq: int | None = None) -> Estimate:
        if seq is None:
            seq = tokens
            if variant.get("cutoff_len") != args.get("cutoff_len"):
                seq = min(tokens, int(variant["cutoff_len"]))
        if variant.get("deepspeed") and variant["deepspeed"] != args.get("deepspeed"):
            from lfkit.launching.deepspeed import config_path

            variant = {**variant, "deepspeed": str(config_path(variant["deepspeed"]))}
        source = how if seq == tokens else "cutoff_len"
        return estimate(shape, variant, variant_own, seq, source, device, lengths_vary=lengths.vary)

    result = StepPlan(step.name, plan_with(args, own), target, source, shape)
    if trace:
        from .trace import trace as trace_step

        s = result.estimate.setting
        result.traced = trace_step(args["model_name_or_path"], args, s.seq_len, s.micro_batch, shape.layers, s.dtype)
    if fit:
        limit = _position_limit(args["model_name_or_path"])
        result.fit = what_fits(args, lambda variant, seq: plan_with(variant, own, seq), tokens, how, target, limit)
    if result.fits is False:
        if platform_kind is None:
            from lfkit.platform_detect import detect_platform

            platform_kind = detect_platform().kind
        result.suggestions = suggestions(args, own, plan_with, target, platform_kind)
    return result


def plan_run(plan, devices: int | None = None, fit: bool = False, trace: bool = False) -> list[StepPlan]:
    """Plans for the train steps of a resolved run (lfkit.recipes.resolve.Plan) whose model folder
    exists already (one an earlier step will make cannot be read before the run)."""
    return [
        plan_step(step, devices, fit=fit, trace=trace)
        for step in plan.steps
        if step.command == "train" and (Path(str(step.args.get("model_name_or_path"))) / "config.json").is_file()
    ]


def refusal(step_plan: StepPlan) -> str:
    """The preflight's one line for a step that will not fit."""
    line = (
        f"step {step_plan.step} needs about {step_plan.needed / GIB:.1f} GiB per worker; {step_plan.target_source} has "
        f"{step_plan.target / GIB:.1f} GiB"
    )
    if step_plan.suggestions:
        best = step_plan.suggestions[0]
        line += f"; try {best.text} ({best.estimate.needed / GIB:.1f} GiB)"
    else:
        line += "; no single change fits (see `lfkit plan`)"
    return line + "; `lfkit plan` shows the rows, --no-preflight runs anyway"
