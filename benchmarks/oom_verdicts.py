"""The memory plan's verdict beside real runs that ran or went out of memory (benchmarks/oom_observations.json).

Each observation is a run someone reported on a card of stated size: it trained ("ran"), it went
out of memory ("oom"), or a table gives the longest context that fits ("longest_fits"), with its
settings, source and a quote. Each held one is planned as LLaMA-Factory would run it (the model's
published config.json in tests/fixtures/model_configs, DeepSpeed's ZeRO presets for the stage it
names) and the plan's *needed* figure is set against the card's total memory: "fits" must match
"ran" and "longest_fits" at the stated length, "does not fit" must match "oom". Beside it the
*reading* (what nvidia-smi would show), and for a boundary the longest sequence the plan lets fit,
beside the source's. Observations the plan cannot be held to are listed with the reason
(``left_out``). tests/test_memory_plan.py holds every verdict.

    python benchmarks/oom_verdicts.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
OBSERVATIONS = REPO / "benchmarks" / "oom_observations.json"
GIB = 2**30
# What a point that names no bitsandbytes version is planned with.
CURRENT_BITSANDBYTES = "0.49.2"


def held(point: dict) -> bool:
    return "left_out" not in point


def train_args(point: dict, seq_len: int | None = None) -> dict:
    """LLaMA-Factory's arguments for the observed run."""
    from published_peaks import lora_target

    from lfkit.launching.deepspeed import config_path

    method = point["method"]
    args: dict = {"finetuning_type": {"qlora": "lora"}.get(method, method)}
    if args["finetuning_type"] == "lora":
        args["lora_rank"] = point.get("lora_rank") or 8
        args["lora_target"] = lora_target({"lora_targets": point.get("lora_targets")})
        args["use_dora"] = bool(point.get("use_dora"))
        args["lora_dropout"] = point.get("lora_dropout", 0.0)
    if point.get("quantization_bits"):
        args["quantization_bit"] = point["quantization_bits"]
    dtype = point.get("dtype") or "bf16"
    args["fp16" if dtype == "fp16" else "bf16"] = dtype != "fp32"
    if dtype == "pure_bf16":
        args["pure_bf16"] = True
    args["per_device_train_batch_size"] = point["micro_batch"]
    args["cutoff_len"] = seq_len or point["seq_len"]
    if point.get("gradient_checkpointing") is False:
        args["disable_gradient_checkpointing"] = True
    if point.get("flash_attn") == "eager":
        args["flash_attn"] = "disabled"
    if point.get("deepspeed_zero") is not None:
        preset = f"z{point['deepspeed_zero']}" + ("-offload" if point.get("offload_optimizer") else "")
        args["deepspeed"] = str(config_path(preset))
    return args


def plan_of(point: dict, seq_len: int | None = None):
    """planning.memory.Estimate of the observed run on its card."""
    from published_peaks import CONFIGS

    from planning.memory import estimate
    from planning.shapes import model_shape

    seq = seq_len or point["seq_len"]
    vary = str(point.get("lengths", "")).startswith("vary")
    workers = {"nproc_per_node": point.get("gpus") or 1}
    shape = model_shape(CONFIGS / point["shape"])
    return estimate(shape, train_args(point, seq), workers, seq, "cutoff_len", "gpu", vary, CURRENT_BITSANDBYTES)


def card_bytes(point: dict) -> int:
    return int(point["card_total_gib"] * GIB)


def longest_that_fits(point: dict) -> int | None:
    """The plan's longest sequence at the point's micro-batch on its card (None: not one token)."""
    from planning.fit import _largest

    card = card_bytes(point)
    return _largest(lambda seq: plan_of(point, seq).needed <= card, 1, 1 << 18)


def verdict(point: dict) -> dict:
    plan = plan_of(point)
    card = card_bytes(point)
    fits = plan.needed <= card
    expected = point["outcome"] != "oom"
    row = {
        "id": point["id"],
        "model": point["shape"],
        "method": point["method"]
        + (f" ZeRO-{point['deepspeed_zero']}" if point.get("deepspeed_zero") is not None else ""),
        "workers": point.get("gpus") or 1,
        "card_gib": point["card_total_gib"],
        "seq_len": point["seq_len"],
        "micro_batch": point["micro_batch"],
        "outcome": point["outcome"],
        "needed_gib": round(plan.needed / GIB, 2),
        "reading_gib": round(plan.reading / GIB, 2),
        "needed_over_card": round(plan.needed / card, 3),
        "plan_fits": fits,
        "right": fits == expected,
    }
    if point["outcome"] == "longest_fits":
        longest = longest_that_fits(point)
        row["plan_longest"] = longest
        row["boundary_ratio"] = None if longest is None else round(longest / point["seq_len"], 2)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    opts = parser.parse_args()
    points = json.loads(OBSERVATIONS.read_text(encoding="utf-8"))
    rows = [verdict(p) for p in points if held(p)]
    left_out = [(p["id"], p["left_out"]) for p in points if not held(p)]
    if opts.json:
        print(json.dumps({"verdicts": rows, "left_out": left_out}, indent=1))
        return 0
    print("needed: what must be free on the card (the verdict); reading: what nvidia-smi would show; GiB per worker")
    head = ("id", "model", "method", "n", "card", "seq", "mb", "outcome", "needed", "reading", "plan", "right")
    line = "{:4} {:18} {:14} {:>2} {:>6} {:>6} {:>3} {:12} {:>7} {:>7} {:9} {}"
    print(line.format(*head))
    for r in rows:
        plan = "fits" if r["plan_fits"] else "no fit"
        print(line.format(r["id"], r["model"][:18], r["method"][:14], r["workers"], f"{r['card_gib']:.1f}",
                          r["seq_len"], r["micro_batch"], r["outcome"], f"{r['needed_gib']:.2f}",
                          f"{r['reading_gib']:.2f}", plan, "yes" if r["right"] else "WRONG"))  # fmt: skip
    print(f"{sum(r['right'] for r in rows)} of {len(rows)} verdicts right")
    for r in rows:
        if "plan_longest" in r:
            print(f"  boundary {r['id']}: the source's longest {r['seq_len']:,} tokens, "
                  f"the plan's {r['plan_longest']:,} ({r['boundary_ratio']:.2f}x)")  # fmt: skip
    for pid, why in left_out:
        print(f"  left out {pid}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
