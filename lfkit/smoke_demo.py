"""The offline smoke run behind `lfkit demo`: a real LLaMA-Factory LoRA training on a tiny model.

It stands in for the `demo` recipe until recipes land: build (or reuse) a tiny
llama model, materialise the registry's datasets (the bundled, synthetic
telecom_demo among them) and run plain ``llamafactory-cli train`` in a subprocess,
so the run goes through lfkit's activation exactly as a user's would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .dataset_registry.lookup_patch import materialize
from .errors import UsageError
from .tiny_models import tiny_model

DATASET = "telecom_demo"


def prepare(out: Path, overwrite: bool) -> Path:
    """Lay out the run folder; returns the path of its LLaMA-Factory YAML."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} already holds a run; pick another --output-dir or pass --overwrite")
        shutil.rmtree(out)
    # The registry's datasets (the bundled, synthetic telecom_demo among them) in a folder of this run's own.
    data_dir = materialize(out / "data")
    config = {
        "model_name_or_path": str(tiny_model("llama")),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "q_proj,v_proj",
        "dataset": DATASET,
        "dataset_dir": str(data_dir),
        "template": "default",
        "cutoff_len": 128,
        "output_dir": str(out / "adapter"),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5.0e-3,
        "num_train_epochs": 1.0,
        "lr_scheduler_type": "cosine",
        "logging_steps": 5,
        "save_steps": 1000,
        "plot_loss": True,
        "report_to": "none",
        "seed": 0,
    }
    config_path = out / "train.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config_path


def run(out: Path, overwrite: bool = False) -> dict:
    config_path = prepare(out, overwrite)
    cli = Path(sys.executable).with_name("llamafactory-cli")
    command = [str(cli) if cli.exists() else "llamafactory-cli", "train", str(config_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    started = time.monotonic()
    result = subprocess.run(command, env=env)
    seconds = round(time.monotonic() - started, 1)
    if result.returncode != 0:
        raise RuntimeError(f"llamafactory-cli train exited with {result.returncode}")
    losses = []
    log = out / "adapter" / "trainer_log.jsonl"
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses.append(record["loss"])
    return {
        "output_dir": str(out),
        "adapter": str(out / "adapter"),
        "seconds": seconds,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "loss_plot": str(out / "adapter" / "training_loss.png"),
    }
