"""The lifecycle hooks fire inside LLaMA-Factory's own process: real `llamafactory-cli` runs on tiny models."""

import json
import os

import pytest

from conftest import BIN, clean_env, lora_train_args, read_jsonl, run, write_alpaca, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]
LF_CLI = BIN / "llamafactory-cli"


def _train_args(model, data_dir, out, **extra):
    return lora_train_args(model, out, dataset_dir=str(data_dir), **extra)


def _env(log, *sites):
    return clean_env(LFKIT_HOOKLOG=str(log), PYTHONPATH=os.pathsep.join(map(str, sites)))


def test_hooks_fire_in_order_in_a_real_train_run(tmp_path, tiny_llama, hooklog_site, broken_site):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "out"
    config = write_yaml(tmp_path / "train.yaml", _train_args(tiny_llama, data, out))
    log = tmp_path / "hooks.jsonl"

    # a broken third-party plugin is installed too: it must not break the run
    result = run([LF_CLI, "train", config], env=_env(log, hooklog_site, broken_site))
    assert result.returncode == 0, result.stderr[-3000:]

    events = read_jsonl(log)
    assert [e["event"] for e in events] == [
        "prepare_args",
        "train_callbacks",
        "post_tokenizer_load",
        "post_model_load",
        "callback.on_train_begin",
        "callback.on_train_end",
    ]
    assert events[0]["command"] == "train"
    assert events[3]["is_trainable"] is True
    assert events[-1]["global_step"] == 2
    assert len({e["pid"] for e in events}) == 1  # all inside llamafactory-cli's own process
    assert {e["local_rank"] for e in events} == {None}
    # the plugin's default reached LLaMA-Factory (its own default rank is 8)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


def test_hooks_fire_in_torchrun_workers(tmp_path, tiny_llama, hooklog_site):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "out"
    config = write_yaml(tmp_path / "train.yaml", _train_args(tiny_llama, data, out))
    log = tmp_path / "hooks.jsonl"
    env = _env(log, hooklog_site)
    # LLaMA-Factory re-launches itself under torchrun (found on PATH, as in a user's venv)
    env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE="1", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    result = run([LF_CLI, "train", config], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchrun" in result.stdout + result.stderr
    events = read_jsonl(log)
    assert [e["event"] for e in events][:4] == [
        "prepare_args",
        "train_callbacks",
        "post_tokenizer_load",
        "post_model_load",
    ]
    assert {e["local_rank"] for e in events} == {"0"}  # fired in the worker, not the launcher
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


def test_argv_form_and_export_on_gemma(tmp_path, tiny_gemma, hooklog_site):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "out"
    log = tmp_path / "hooks.jsonl"
    argv = []
    for key, value in _train_args(tiny_gemma, data, out, template="gemma", lora_rank=2).items():
        argv += [f"--{key}", "true" if value is True else str(value)]
    result = run([LF_CLI, "train", *argv], env=_env(log, hooklog_site))
    assert result.returncode == 0, result.stderr[-3000:]
    # the user's value wins over the plugin's default
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2

    merged = tmp_path / "merged"
    result = run(
        [
            LF_CLI,
            "export",
            "--model_name_or_path",
            tiny_gemma,
            "--adapter_name_or_path",
            out,
            "--template",
            "gemma",
            "--finetuning_type",
            "lora",
            "--export_dir",
            merged,
        ],
        env=_env(log, hooklog_site),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (merged / "config.json").is_file()
    events = read_jsonl(log)
    train_pid = events[0]["pid"]
    export = [e for e in events if e["pid"] != train_pid]
    assert [e["event"] for e in export] == ["prepare_args", "post_tokenizer_load", "post_model_load"]
    assert export[0]["command"] == "export"
    assert export[2]["is_trainable"] is False
    assert events[0]["lora_rank_given"] is True


def test_disabled_wiring_means_no_hooks(tmp_path, tiny_llama, hooklog_site):
    data = write_alpaca(tmp_path / "data")
    config = write_yaml(tmp_path / "train.yaml", _train_args(tiny_llama, data, tmp_path / "out"))
    log = tmp_path / "hooks.jsonl"
    env = _env(log, hooklog_site)
    env["LFKIT_DISABLE_PATCHES"] = "lf-hook-prepare-args,lf-hook-model-load,lf-hook-train-callbacks"
    result = run([LF_CLI, "train", config], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not log.exists()
