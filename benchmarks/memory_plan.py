"""How close is `lfkit plan` to what a train step really holds? Prints plan / measured / ratio tables.

    python benchmarks/memory_plan.py            # CPU part always; GPU part where a GPU is visible
    python benchmarks/memory_plan.py --quick    # the GPU part on two configurations only

CPU: the activation bytes one decoder layer keeps for backward (every tensor autograd saves,
caught with saved_tensors_hooks) against the plan's per-layer formula, for LLaMA-shaped layers
in bf16 autocast and in float32, with and without LoRA dropout. (Weights, trainable parameters,
gradients and optimizer states are checked byte for byte by tests/test_memory_plan.py.)

GPU: real train steps on randomly initialised models with Gemma-2B and Llama-2-7B shapes under a
16 GiB cap (torch.cuda.set_per_process_memory_fraction), set up as LLaMA-Factory sets them up
(trainable parameters in float32, bf16 autocast, gradient checkpointing through the model's own
switch, fused AdamW), torch.cuda.max_memory_allocated against the plan's peak without its
runtime-overhead row (the CUDA context is not in the allocator's count), and whether the verdict
"fits / does not fit" was right. Without a GPU it prints "no GPU: skipped".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "fixtures" / "model_configs"
GIB = 2**30
CAP = 16 * GIB


def _print(title: str, columns: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in [c, *[r[i] for r in rows]]) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


# --- CPU: activation bytes per layer ---------------------------------------------------------


def saved_bytes_per_token(h, f, heads, kv, dtype, lora, dropout, batch=2, seq=128) -> float:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=h, intermediate_size=f, num_attention_heads=heads, num_key_value_heads=kv,
                         num_hidden_layers=2, vocab_size=1000, attn_implementation="sdpa")  # fmt: skip
    model = LlamaForCausalLM(config).to(dtype)
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, lora_dropout=dropout))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LLaMA-Factory's upcast of trainable parameters
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    layer = model.get_decoder().layers[0]
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    layer.register_forward_pre_hook(lambda *_: hooks.__enter__())
    layer.register_forward_hook(lambda *_: hooks.__exit__(None, None, None))
    ids = torch.randint(0, 1000, (batch, seq))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(n for ptr, n in saved.items() if ptr not in params) / (batch * seq)


def cpu_part() -> None:
    from lfkit.planning.memory import Setting, _layer_activation_bytes
    from lfkit.planning.shapes import ModelShape

    cases = [  # hidden, intermediate, heads, kv heads, dtype, dropout
        (512, 1376, 8, 8, torch.bfloat16, 0.0),
        (1024, 1376, 16, 16, torch.bfloat16, 0.0),
        (512, 2752, 8, 2, torch.bfloat16, 0.0),
        (512, 1376, 8, 8, torch.float32, 0.0),
        (1024, 1376, 16, 16, torch.float32, 0.0),
        (512, 2752, 8, 2, torch.float32, 0.0),
        (1024, 1376, 16, 16, torch.bfloat16, 0.1),
        (512, 2752, 8, 2, torch.bfloat16, 0.1),
    ]
    rows = []
    for h, f, heads, kv, dtype, dropout in cases:
        measured = saved_bytes_per_token(h, f, heads, kv, dtype, True, dropout)
        shape = ModelShape("llama", 2, h, f, heads, kv, h // heads, 1000)
        name = "bfloat16" if dtype == torch.bfloat16 else "float32"
        setting = Setting("gpu", name, "float32", "lora", False, 2, 128, "", lora_rank=8)
        planned = _layer_activation_bytes(shape, setting, 6 * h + f, 7, dropout > 0)
        ratio = f"{planned / measured:.2f}"
        rows.append([f"h={h} f={f} kv={kv}/{heads}", name, dropout, int(measured), planned, ratio])
    _print("CPU: bytes per token one LoRA layer keeps for backward", ["shape", "dtype", "dropout", "measured",
           "plan", "plan/measured"], rows)  # fmt: skip


# --- GPU: real steps under a 16 GiB cap ------------------------------------------------------

GPU_CASES = [  # model, method, quantization bits, cutoff (= the batch's length), batch, checkpointing
    ("gemma-2b", "lora", None, 512, 1, True),
    ("gemma-2b", "lora", None, 2048, 4, True),
    ("gemma-2b", "lora", None, 2048, 1, False),
    ("gemma-2b", "freeze", None, 512, 4, True),
    ("gemma-2b", "full", None, 512, 1, True),
    ("Llama-2-7b-hf", "lora", None, 512, 1, True),
    ("Llama-2-7b-hf", "lora", None, 2048, 4, True),
    ("Llama-2-7b-hf", "lora", 8, 512, 4, True),
    ("Llama-2-7b-hf", "lora", 4, 2048, 1, True),
    ("Llama-2-7b-hf", "lora", 4, 512, 4, False),
    ("Llama-2-7b-hf", "freeze", None, 512, 1, True),
]


def _random_model_folder(name: str, scratch: Path) -> Path:
    """Random bf16 weights with the model's shape, saved once (bitsandbytes quantizes while loading)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = scratch / name
    if not (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(CONFIGS / name)
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        model.save_pretrained(folder)
        del model
    return folder


def gpu_step(folder: Path, method: str, bits: int | None, seq: int, batch: int, checkpointing: bool) -> int | None:
    """max_memory_allocated over two real steps, or None when it ran out of memory."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    quantization = None
    if bits:
        quantization = BitsAndBytesConfig(
            load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
        )  # fmt: skip
    model = None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, torch_dtype=torch.bfloat16, quantization_config=quantization, device_map={"": 0}
        )
        layers = model.config.num_hidden_layers
        if method == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
        else:
            for name, p in model.named_parameters():
                p.requires_grad_(method == "full" or any(f".{i}." in name for i in (layers - 2, layers - 1)))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
            model.enable_input_require_grads()
        model.config.use_cache = False
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return int(torch.cuda.max_memory_allocated())
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del model
        torch.cuda.empty_cache()


def gpu_part(quick: bool) -> None:
    if not torch.cuda.is_available():
        print("\nGPU: no GPU: skipped")
        return
    from lfkit.planning.memory import estimate
    from lfkit.planning.shapes import model_shape

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, CAP / total))
    rows, within, right = [], 0, 0
    cases = GPU_CASES[:2] if quick else GPU_CASES
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-") as scratch:
        for name, method, bits, seq, batch, checkpointing in cases:
            args = {"finetuning_type": method, "per_device_train_batch_size": batch, "bf16": True,
                    "lora_target": "q_proj,v_proj", "disable_gradient_checkpointing": not checkpointing}  # fmt: skip
            if bits:
                args["quantization_bit"] = bits
            # the random batches are all `seq` long: no blocks of earlier lengths
            plan = estimate(model_shape(CONFIGS / name), args, {}, seq, "benchmark", "gpu", lengths_vary=False)
            planned = plan.tensors  # what max_memory_allocated counts
            measured = gpu_step(_random_model_folder(name, Path(scratch)), method, bits, seq, batch, checkpointing)
            plan_fits, real_fits = plan.needed <= CAP, measured is not None
            right += plan_fits == real_fits
            ratio = "" if measured is None else f"{planned / measured:.2f}"
            within += measured is not None and 0.85 <= planned / measured <= 1.15
            rows.append([name, method + (f" {bits}-bit" if bits else ""), seq, batch, "on" if checkpointing else "off",
                         f"{planned / GIB:.2f}", "OOM" if measured is None else f"{measured / GIB:.2f}", ratio,
                         "right" if plan_fits == real_fits else "WRONG"])  # fmt: skip
    _print(f"GPU ({torch.cuda.get_device_name(0)}, capped at 16 GiB): peak GiB per step",
           ["model", "method", "seq", "batch", "ckpt", "plan", "measured", "ratio", "verdict"], rows)  # fmt: skip
    print(f"ratios within 0.85-1.15: {within}/{len(rows)}; verdict right: {right}/{len(rows)}")


def speed_part(rounds: int = 5) -> None:
    """How long `lfkit plan` of each 7B config takes with no model shape cached, beside
    `python -c "import transformers"`, interleaved, medians (goal: within 3 s). The home is warmed
    once with another model, so LLaMA-Factory's argument kinds (read once per installed version)
    are not in the figures; no tokenizer sits beside the configs, so nothing is tokenized."""
    import os
    import statistics
    import subprocess
    import time

    lfkit = str(Path(sys.executable).parent / "lfkit")
    base = {k: v for k, v in os.environ.items() if not k.startswith("LFKIT_")}

    def plan(model: str, home: str) -> None:
        argv = [lfkit, "plan", "sft-lora-single", f"model={CONFIGS / model}", "dataset=telecom_demo",
                "gpu_memory=16GiB", "--json"]  # fmt: skip
        subprocess.run(argv, env={**base, "LFKIT_HOME": home}, check=True, capture_output=True)

    # the last through transformers' meta device: no layout of it is written in lfkit
    models = ["Llama-2-7b-hf", "chatglm3-6b", "Baichuan2-7B-Chat", "Mistral-7B-v0.1", "Qwen2-7B-Instruct",
              "pythia-6.9b"]  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in ["import transformers", *models]}
    with tempfile.TemporaryDirectory() as scratch:
        warm = str(Path(scratch) / "warm")
        plan("gemma-2b", warm)
        for index in range(rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import transformers"], env=base, check=True)
            times["import transformers"].append(time.perf_counter() - started)
            for model in models:
                home = str(Path(scratch) / f"{model}-{index}")
                subprocess.run(["cp", "-r", warm, home], check=True)  # the facts, no shape of this model
                started = time.perf_counter()
                plan(model, home)
                times[model].append(time.perf_counter() - started)
    reference = statistics.median(times["import transformers"])
    rows = [[name, f"{statistics.median(s):.2f} s", f"{statistics.median(s) / reference:.2f}"]
            for name, s in times.items()]  # fmt: skip
    _print(f"plan speed, nothing of the model cached (median of {rounds}; goal <= 3 s)",
           ["what", "time", "x import transformers"], rows)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two GPU configurations only")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU part")
    options = parser.parse_args()
    if not options.gpu_only:
        cpu_part()
        speed_part()
    gpu_part(options.quick)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
