"""With lfkit installed, LLaMA-Factory does exactly what it does without it, except where a declared fix applies.

Two witnesses:
- LLaMA-Factory's own test suite (from its sdist on PyPI, of the installed version),
  run with lfkit off (LFKIT_AUTOLOAD=0) and on, on local stand-ins of the hub models
  it asks for: every test that passes off passes on, and LLaMA-Factory's parser
  receives the same arguments in both modes (no declared patch changes a key on CPU).
- plain ``llamafactory-cli train`` on a Llama-3-style folder with a YAML that gives no
  template and no lora_target: the same adapter, template and log either way.
And ``lfkit run`` still fills a LLaMA-2 folder's family defaults, visibly.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import BIN, clean_env, run

SUITE = Path(__file__).resolve().parent / "llamafactory_suite"
sys.path.insert(0, str(SUITE))

import harness  # noqa: E402
import standins  # noqa: E402

pytestmark = pytest.mark.slow
# Kept in the environment's own folder: downloaded once per environment, never committed.
CACHE = Path(sys.prefix) / "lfkit-test-cache"


@pytest.fixture(scope="module")
def lf_root() -> Path:
    try:
        return harness.sdist(CACHE)
    except Exception as exc:  # noqa: BLE001 - no PyPI here: say so (and fail under CI)
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"the llamafactory sdist could not be downloaded: {exc}")


@pytest.fixture(scope="module")
def lf_data(lf_root) -> Path:
    """LLaMA-Factory's demo data: the installed release's, or (0.9.3's sdist has none) the newest tested one's."""
    if (lf_root / "data" / "dataset_info.json").is_file():
        return lf_root / "data"
    return harness.sdist(CACHE, harness.DATA_RELEASE) / "data"


@pytest.fixture(scope="module")
def work(lf_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lf-suite")
    standins.build(folder / "standins", lf_data)
    return folder


@pytest.fixture(scope="module")
def suite(lf_root, work) -> harness.Comparison:
    if not (lf_root / "tests" / "conftest.py").is_file():
        pytest.skip(f"LLaMA-Factory {lf_root.name}'s sdist carries no test suite (the plain-cli checks run there)")
    with ThreadPoolExecutor(2) as pool:
        off = pool.submit(harness.run_mode, "off", lf_root, work, clean_env())
        on = pool.submit(harness.run_mode, "on", lf_root, work, clean_env())
        found = harness.compare(off.result(), on.result())
    print("\n" + harness.summary(found))
    return found


def test_the_suite_ran_in_both_modes(suite):
    assert suite.off.lfkit_active is False and suite.on.lfkit_active is True
    assert set(suite.off.outcomes) == set(suite.on.outcomes)
    # The stand-ins carry the suite: the data, template, LoRA, freeze, full and e2e tests pass offline.
    assert len(suite.off.passed()) >= 80, harness.summary(suite)
    for test in (
        "tests/model/test_lora.py::test_lora_train_valuehead",
        "tests/e2e/test_train.py::test_run_exp[sft-alpaca_en_demo]",
        "tests/data/processor/test_supervised.py::test_supervised_multi_turn[8]",
    ):
        assert suite.off.outcomes.get(test) == "passed", harness.summary(suite)
    assert sum(len(calls) for calls in suite.off.calls.values()) >= 50


def test_every_test_that_passes_without_lfkit_passes_with_it(suite):
    assert suite.lost == [], harness.summary(suite)
    assert suite.outcome_changes == [], harness.summary(suite)


def test_llamafactory_parses_the_same_arguments_with_lfkit(suite):
    assert suite.arg_changes == [], harness.summary(suite)


def _train(work: Path, lfkit_on: bool) -> tuple[dict, str, str, list]:
    out = work / f"plain-cli-{'on' if lfkit_on else 'off'}"
    config = {
        "model_name_or_path": str(work / "standins" / standins.LLAMA3),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "dataset": "alpaca_en_demo",
        "dataset_dir": str(work / "standins" / standins.DEMO_DATA),
        "cutoff_len": 64,
        "max_samples": 8,
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "output_dir": str(out),
        "report_to": "none",
    }
    # No template, no lora_target: LLaMA-Factory's own choices must hold (the tokenizer's template, "all").
    config_file = work / f"plain-cli-{'on' if lfkit_on else 'off'}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = clean_env(PYTHONPATH=str(SUITE))
    if not lfkit_on:
        env["LFKIT_AUTOLOAD"] = "0"
    # llamafactory-cli's own main, with the parser's arguments recorded (llamafactory_suite/record_cli.py).
    # The demo data's dataset_info.json names its hub id, which this working folder holds as a local folder.
    report = work / f"plain-cli-{'on' if lfkit_on else 'off'}.args.json"
    cli = [BIN / "python", SUITE / "record_cli.py", report, "train", config_file]
    result = run(cli, env=env, cwd=work / "standins", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    adapter = json.loads((out / "adapter_config.json").read_text())
    # The prompt format saved with the adapter: its own file from LLaMA-Factory 0.9.4, the tokenizer's before.
    saved = out / "chat_template.jinja"
    template = (
        saved.read_text()
        if saved.is_file()
        else json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    )
    return adapter, template, result.stdout + result.stderr, json.loads(report.read_text())


@pytest.mark.both_stacks
def test_plain_llamafactory_cli_trains_a_llama3_folder_as_without_lfkit(work):
    with ThreadPoolExecutor(2) as pool:
        off, on = pool.map(lambda lfkit_on: _train(work, lfkit_on), (False, True))
    # the arguments LLaMA-Factory's parser received, but for the output folder each run was given
    received = [[{**call, "args": {**call["args"], "output_dir": None}} for call in mode[3]] for mode in (off, on)]
    assert received[1] == received[0] and received[0]
    assert "template" not in off[3][0]["args"] and "lora_target" not in off[3][0]["args"]
    assert sorted(on[0]["target_modules"]) == sorted(off[0]["target_modules"])
    assert sorted(off[0]["target_modules"]) == sorted(standins.TARGETS)  # LLaMA-Factory's lora_target "all"
    assert on[1] == off[1]  # the prompt format saved with the adapter
    assert "<|start_header_id|>" in on[1] and "[INST]" not in on[1]
    assert "lf-hook-prepare-args" not in on[2]  # nothing changed, so nothing to say
    detected = json.loads(run([BIN / "lfkit", "models", "detect", work / "standins" / standins.LLAMA3, "--json"],
                              env=clean_env()).stdout)  # fmt: skip
    assert detected["family"] is None and detected["train_defaults"] == {}
    assert "<|begin_of_text|>" in detected["why"]


@pytest.mark.both_stacks
def test_lfkit_run_still_fills_a_llama2_folders_defaults_and_says_so(tiny_llama, tmp_path):
    argv = [BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
            f"output_dir={tmp_path / 'out'}", "--dry-run"]  # fmt: skip
    result = run(argv, env=clean_env())
    assert result.returncode == 0, result.stderr[-2000:]
    step = json.loads(result.stdout)["steps"][0]
    assert (step["args"]["template"], step["args"]["lora_target"]) == ("llama2", "q_proj,v_proj")
    notes = {note.partition(":")[0]: note for note in step["notes"]}
    assert notes["template"].startswith("template: llama2 (llama2 family default (config.json model_type 'llama'")
    assert "tokenizer bos_token '<s>', eos_token '</s>'" in notes["lora_target"]
    exported = run([BIN / "lfkit", "recipes", "export", "sft-lora-single", f"model={tiny_llama}",
                    "dataset=telecom_demo", f"output_dir={tmp_path / 'out'}", "-o", tmp_path / "sft.yaml"],
                   env=clean_env())  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    text = (tmp_path / "sft.yaml").read_text()
    assert "# resolved here: template: llama2 (llama2 family default" in text
    assert "\ntemplate: llama2\n" in text and "\nlora_target: q_proj,v_proj\n" in text
