"""A torchrun worker for tests/test_zero_plan.py: a model under DeepSpeed ZeRO on DeepSpeed's CPU accelerator,
two training steps with torch's AdamW (as LLaMA-Factory hands it over), and the bytes of every tensor alive
after the second backward pass and at its optimizer step (the first makes Adam's states, one ZeRO-3
sub-group at a time), by dtype, written as JSON per rank.

    torchrun --nproc_per_node 2 zero_buffers_worker.py MODEL_DIR CONFIG.json OUT_PREFIX
"""

import gc
import json
import os
import sys

import deepspeed
import torch
from transformers import AutoModelForCausalLM


def live_bytes() -> dict[str, int]:
    """Bytes of the distinct storages every live tensor holds, by dtype."""
    storages: dict[int, tuple[int, str]] = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = (storage.nbytes(), str(obj.dtype).replace("torch.", ""))
        except Exception:  # noqa: BLE001 - objects that only look like tensors
            continue
    out: dict[str, int] = {}
    for size, dtype in storages.values():
        out[dtype] = out.get(dtype, 0) + size
    return out


def main() -> None:
    model_dir, config_path, prefix = sys.argv[1:4]
    config = json.loads(open(config_path, encoding="utf-8").read())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    model.gradient_checkpointing_enable()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    seen: dict[str, dict[str, int]] = {}
    inner = engine.optimizer.optimizer
    original = inner.step

    def step(*args, **kwargs):
        result = original(*args, **kwargs)
        if "after_backward" in seen:  # the second step: ZeRO-3 steps one sub-group at a time; the largest's
            now = live_bytes()
            if now.get("float32", 0) >= seen.get("at_step", {}).get("float32", 0):
                seen["at_step"] = now
        return result

    inner.step = step
    ids = torch.randint(4, 100, (2, 16))
    for second in (False, True):
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        if second:
            seen["after_backward"] = live_bytes()
        engine.step()
    rank = int(os.environ["RANK"])
    with open(f"{prefix}.{rank}.json", "w", encoding="utf-8") as out:
        json.dump(seen, out)
    torch.distributed.barrier()
    # ZeRO-3's hooks and prefetch threads abort the interpreter's own teardown now and then
    # ("terminate called without an active exception"): leave once both workers have written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
