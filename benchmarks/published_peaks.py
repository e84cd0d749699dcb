"""The memory plan beside published measured peaks of real fine-tunes (benchmarks/published_peaks.json).

Each point is turned into the LLaMA-Factory arguments of the same run (method, rank and
targets, quantization, precision, micro-batch, sequence length, gradient checkpointing,
ZeRO) on the model's published config.json (tests/fixtures/model_configs), planned for a
GPU, and printed as plan / measured: the whole plan beside what the card showed (nvidia-smi,
max_memory_reserved), the plan's tensors beside max_memory_allocated. A point the plan cannot
be compared with is left out with the reason (``excluded`` in the JSON: another quantization
library, an unknown sequence length, a "fits" claim rather than a measurement); a point it is
compared with but does not hold says why (``not_held``: contradicted by another source for the
same run, another trainer's own layers). The held readings are tests/test_memory_plan.py's.

    python benchmarks/published_peaks.py [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
POINTS = REPO / "benchmarks" / "published_peaks.json"
CONFIGS = REPO / "tests" / "fixtures" / "model_configs"
GIB = 2**30

# The published model -> the config.json the plan reads for it.
MODELS = {
    "Qwen/Qwen-7B-Chat": "Qwen-7B-Chat-as-llama",
    "Qwen/Qwen-7B-Chat-Int4": "Qwen-7B-Chat-as-llama",
    "Qwen/Qwen2-7B-Instruct": "Qwen2-7B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen2-7B-Instruct",  # the same shapes as Qwen2-7B
    "mistralai/Mistral-7B-v0.1": "Mistral-7B-v0.1",
    "meta-llama/Llama-2-7b-hf": "Llama-2-7b-hf",
    "openlm-research/open_llama_7b": "Llama-2-7b-hf",  # LLaMA-7B shapes, vocab 32000
    "meta-llama/Meta-Llama-3-8B": "Meta-Llama-3-8B",
    "meta-llama/Llama-3.1-8B-Instruct": "Meta-Llama-3-8B",
    "THUDM/chatglm3-6b": "chatglm3-6b",
    "baichuan-inc/Baichuan2-7B-Chat": "Baichuan2-7B-Chat",
}
# Module names of other code bases -> the LLaMA-shaped names of the config above.
TARGET_NAMES = {
    "c_attn": ["q_proj", "k_proj", "v_proj"],
    "c_proj": ["o_proj", "down_proj"],  # Qwen-7B names the attention and the MLP output c_proj
    "w1": ["up_proj"],
    "w2": ["gate_proj"],
    "q": ["q_proj"],
    "v": ["v_proj"],
}
# What a point that names no bitsandbytes version is planned with (not the machine's own install).
CURRENT_BITSANDBYTES = "0.49.2"
UNIT_BYTES = {"GiB": GIB, "G": GIB, "MiB": 2**20, "GB": 10**9}


def measured_bytes(point: dict) -> int | None:
    unit = point.get("unit")
    value = point.get("measured_value")
    if unit not in UNIT_BYTES or not isinstance(value, (int, float)):
        return None
    return int(value * UNIT_BYTES[unit])


def lora_target(point: dict) -> str:
    targets = point.get("lora_targets")
    if isinstance(targets, list):
        names: list[str] = []
        for t in targets:
            for name in TARGET_NAMES.get(t, [t]):
                if name not in names:
                    names.append(name)
        return ",".join(names)
    return "all"


def train_args(point: dict) -> dict:
    method = point["method"]
    args: dict = {"finetuning_type": "full" if method == "full" else "lora"}
    if method != "full":
        args["lora_rank"] = point.get("lora_rank") or 8
        args["lora_target"] = lora_target(point)
    if point.get("quantization_bits"):
        args["quantization_bit"] = point["quantization_bits"]
    dtype = str(point.get("dtype") or "")
    args["fp16" if dtype.startswith("fp16") else "bf16"] = True
    if "bf16-true" in dtype or (method == "full" and point.get("pure_bf16")):
        args["pure_bf16"] = True
    args["per_device_train_batch_size"] = point["micro_batch"]
    args["cutoff_len"] = point["seq_len"]
    if point.get("gradient_checkpointing") is False:
        args["disable_gradient_checkpointing"] = True
    if point.get("deepspeed_zero") is not None:
        args["deepspeed"] = f"z{point['deepspeed_zero']}"
    return args


def allocated_only(what: str) -> bool:
    """A reading of max_memory_allocated counts live tensors only: no allocator reserve, no context."""
    return "allocated" in what.lower()


def plan_of(point: dict):
    """The plan (planning.memory.Estimate) of the point's run on a GPU."""
    from lfkit.launching.deepspeed import config_path
    from planning.memory import estimate
    from planning.shapes import model_shape

    args = {**train_args(point), **point.get("plan_args", {})}
    if args.get("deepspeed"):
        args["deepspeed"] = str(config_path(args["deepspeed"]))
    shape = model_shape(CONFIGS / MODELS[point["model"]])
    vary = not str(point.get("batch_lengths", "vary")).startswith("fixed")
    return estimate(shape, args, {}, int(point["seq_len"]), "cutoff_len", "gpu", vary, bitsandbytes_of(point))


def bitsandbytes_of(point: dict) -> str:
    """The bitsandbytes version the run used: stated with the point, or in its versions; else a current one."""
    stated = re.search(r"bitsandbytes (\d+\.\d+\.\d+)", str(point.get("framework_version", "")))
    return point.get("bitsandbytes") or (stated.group(1) if stated else CURRENT_BITSANDBYTES)


def plan_bytes(point: dict) -> int:
    return plan_of(point).reading


def compare(point: dict) -> list[dict]:
    """The plan beside the point's reading (and beside its second reading, where it has one)."""
    plan = plan_of(point)
    tensors = plan.tensors
    readings = [(point["id"], measured_bytes(point), point.get("measured_what", ""))]
    alt = point.get("alt_measurement")
    if alt and alt.get("unit") == "bytes":
        readings.append((point["id"] + "a", int(alt["value"]), alt.get("what", "")))
    found = []
    for pid, measured, what in readings:
        planned = tensors if allocated_only(what) else plan.reading
        found.append({
            "id": pid,
            "model": point["model"],
            "method": point["method"],
            "seq_len": point["seq_len"],
            "micro_batch": point["micro_batch"],
            "reading": "allocated" if allocated_only(what) else "card",
            "held": not point.get("not_held"),
            "measured_gib": measured / GIB,
            "plan_gib": planned / GIB,
            "ratio": planned / measured,
            "rows_gib": {k: round(v / GIB, 2) for k, v in plan.rows.items()},
        })  # fmt: skip
    return found


def usable(point: dict) -> bool:
    known = point["model"] in MODELS and isinstance(point.get("seq_len"), int)
    return not point.get("excluded") and known and measured_bytes(point) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    opts = parser.parse_args()
    points = json.loads(POINTS.read_text(encoding="utf-8"))
    rows = [row for p in points if usable(p) for row in compare(p)]

    def why(point: dict) -> str:
        if point.get("measured_value") == "OOM" and not point.get("excluded"):
            planned = plan_bytes(point) / GIB
            return f"did not fit on its card (plan {planned:.1f} GiB); a fit boundary, checked by the test"
        return point.get("excluded", "")

    left_out = [(p["id"], why(p)) for p in points if not usable(p)]
    if opts.json:
        print(json.dumps({"compared": rows, "excluded": left_out}, indent=1))
        return 0
    print("GiB; 'card': nvidia-smi, max_memory_reserved or an unstated tool, beside the whole plan;")
    print("'allocated': max_memory_allocated, beside the plan's tensors (less the context and the allocator's rows)")
    head = ("id", "model", "method", "seq", "mb", "reading", "measured", "plan", "ratio", "held")
    line = "{:5} {:28} {:6} {:>6} {:>3} {:9} {:>9} {:>7} {:>6} {}"
    print(line.format(*head))
    for r in rows:
        print(line.format(r["id"], r["model"][-28:], r["method"], r["seq_len"], r["micro_batch"], r["reading"],
                          f"{r['measured_gib']:.2f}", f"{r['plan_gib']:.2f}", f"{r['ratio']:.2f}",
                          "yes" if r["held"] else "no"))  # fmt: skip
    held = [r["ratio"] for r in rows if r["held"]]
    print(f"{len(held)} readings held: ratio min {min(held):.2f}, max {max(held):.2f} "
          "(goal 0.9-1.3, held by tests/test_memory_plan.py)")  # fmt: skip
    for point in points:
        if point.get("not_held") and usable(point):
            print(f"  not held {point['id']}: {point['not_held']}")
    for pid, why in left_out:
        print(f"  left out {pid}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
