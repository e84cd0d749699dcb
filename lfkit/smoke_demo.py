"""The offline smoke run behind `lfkit demo`: a real LLaMA-Factory LoRA training on a tiny model.

It stands in for the `demo` recipe until recipes land: build (or reuse) a tiny
llama model, write a few synthetic telecom-style rows, and run plain
``llamafactory-cli train`` in a subprocess, so the run goes through lfkit's
activation exactly as a user's would.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .errors import UsageError
from .tiny_models import tiny_model

DATASET = "lfkit_smoke"
_QUESTIONS = {
    "取消方式": ["9元百度专属定向流量包如何取消", "视频会员流量包怎么退订", "国际漫游怎么关闭"],
    "开通方式": ["7天5g视频会员流量包怎么开通", "宽带提速包怎么办理", "国际漫游怎么开通"],
    "业务简介": ["畅享套餐包含什么", "积分可以兑换什么", "副卡是什么业务"],
}


def smoke_rows(n: int = 48, seed: int = 0) -> list[dict[str, str]]:
    """Synthetic rows in the telecom alpaca shape (instruction / empty input / label answer)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = list(_QUESTIONS)[i % len(_QUESTIONS)]
        question = rng.choice(_QUESTIONS[category])
        rows.append(
            {
                "instruction": f"回答中国电信手机用户的问题,{question},应该怎么做？",
                "input": "",
                "output": f"{category}_{rng.randint(1, 120)}",
            }
        )
    return rows


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def prepare(out: Path, overwrite: bool) -> Path:
    """Lay out the run folder; returns the path of its LLaMA-Factory YAML."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} already holds a run; pick another --output-dir or pass --overwrite")
        shutil.rmtree(out)
    data_dir = out / "data"
    data_dir.mkdir(parents=True)
    _write_json(data_dir / f"{DATASET}.json", smoke_rows())
    _write_json(
        data_dir / "dataset_info.json",
        {
            DATASET: {
                "file_name": f"{DATASET}.json",
                "columns": {"prompt": "instruction", "query": "input", "response": "output"},
            }
        },
    )
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
        "num_train_epochs": 2.0,
        "lr_scheduler_type": "cosine",
        "logging_steps": 2,
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
