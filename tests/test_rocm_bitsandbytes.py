"""bitsandbytes on simulated ROCm / DTK with the real bitsandbytes 0.38.1 and the current release.

The failure of seed 000: an installed bitsandbytes that cannot load breaks plain
LoRA, because peft imports it whenever it is installed.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import (
    BIN,
    built_once,
    clean_env,
    lora_train_args,
    pip_target,
    probe,
    read_jsonl,
    run,
    write_alpaca,
    write_yaml,
)

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
PATCH_ID = "bitsandbytes-hide-unusable"

PROBE = (
    """
import importlib.util, json, os, sys
import torch
from simulate_platform import simulate
if os.environ.get("SIM_KIND"):
    simulate(kind=os.environ["SIM_KIND"], hip=os.environ["SIM_HIP"])

def lora():
    import peft, transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(os.environ["TINY_MODEL"])
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = torch.tensor([[1, 5, 9, 2]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return "ok" if torch.isfinite(loss) else "loss not finite"

try:
    report = {"lora": lora()}
except BaseException as exc:
    report = {"lora": f"{type(exc).__name__}: {exc}"}
report["visible"] = importlib.util.find_spec("bitsandbytes") is not None
from transformers.utils import is_bitsandbytes_available
report["transformers_sees_it"] = is_bitsandbytes_available()
from lfkit.plugin_manager import get_manager
state = get_manager().patches.states[%r]
report["patch"] = [state.status.value, state.detail]
print("REPORT " + json.dumps(report))
"""
    % PATCH_ID
)


@pytest.fixture(scope="session")
def bnb_0381(tmp_path_factory):
    return built_once(
        tmp_path_factory, "bitsandbytes-0.38.1", lambda folder: pip_target(folder, "bitsandbytes==0.38.1")
    )


def _probe(tiny_llama, tmp_path, site=None, fixed=True, **sim):
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(TESTS)] + ([str(site)] if site else [])), TINY_MODEL=str(tiny_llama), **sim
    )
    if not fixed:
        env["LFKIT_DISABLE_PATCHES"] = PATCH_ID
    return probe(PROBE, env=env, cwd=tmp_path)


DTK = {"SIM_KIND": "dtk", "SIM_HIP": "5.7.24164"}


def test_0381_on_dtk_breaks_plain_lora_and_lfkit_hides_it(tiny_llama, tmp_path, bnb_0381):
    broken = _probe(tiny_llama, tmp_path, bnb_0381, fixed=False, **DTK)
    assert broken["lora"] == "ModuleNotFoundError: No module named 'triton.ops'"
    assert broken["visible"] is True

    fixed = _probe(tiny_llama, tmp_path, bnb_0381, **DTK)
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False and fixed["transformers_sees_it"] is False
    status, detail = fixed["patch"]
    assert status == "applied"
    assert detail.startswith("hid bitsandbytes 0.38.1: bitsandbytes 0.38.1 imports triton.ops, which triton 3.")


def test_current_release_on_dtk_is_hidden_for_the_wrong_abi(tiny_llama, tmp_path):
    fixed = _probe(tiny_llama, tmp_path, **DTK)
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False
    assert "has no DTK build; DTK takes the 0.38.1 ABI" in fixed["patch"][1]


def test_current_release_on_rocm_with_its_library_stays(tiny_llama, tmp_path):
    fixed = _probe(tiny_llama, tmp_path, SIM_KIND="rocm", SIM_HIP="6.4.43482")
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is True and fixed["transformers_sees_it"] is True
    assert fixed["patch"] == ["skipped", "bitsandbytes 0.50.2 fits: ships libbitsandbytes_rocm64"]


def test_current_release_on_rocm_62_lacks_its_library(tiny_llama, tmp_path):
    fixed = _probe(tiny_llama, tmp_path, SIM_KIND="rocm", SIM_HIP="6.2.41133")
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False
    assert "ships no library for ROCm 6.2 (ROCm libraries: 6.4, 7.0, 7.1, 7.2, 7.14, 7.15)" in fixed["patch"][1]


def test_on_cpu_bitsandbytes_is_left_alone(tiny_llama, tmp_path):
    report = _probe(tiny_llama, tmp_path)
    assert report["lora"] == "ok"
    assert report["visible"] is True
    assert report["patch"] == ["skipped", "platform is cpu, patch is for dtk/rocm"]


def _train(tmp_path, tiny_llama, hooklog_site, simulate, hip, **extra):
    data = write_alpaca(tmp_path / "data")
    config = write_yaml(
        tmp_path / "train.yaml", lora_train_args(tiny_llama, tmp_path / "out", dataset_dir=str(data), **extra)
    )
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(TESTS / "sim_site"), str(hooklog_site)]),
        LFKIT_TEST_SIMULATE=simulate,
        LFKIT_TEST_HIP=hip,
        LFKIT_HOOKLOG=str(tmp_path / "hooks.jsonl"),
    )
    return run([BIN / "llamafactory-cli", "train", config], env=env)


def _events(tmp_path):
    return [e["event"] for e in read_jsonl(tmp_path / "hooks.jsonl")]


def test_4bit_on_dtk_stops_before_the_model_loads(tmp_path, tiny_llama, hooklog_site):
    result = _train(tmp_path, tiny_llama, hooklog_site, "dtk", "5.7.24164", quantization_bit=4)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "lfkit: error: 4-bit bitsandbytes quantization cannot work on DTK (the 0.38.1 ABI is 8-bit only): "
        'use quantization_bit: 8 with pip install "bitsandbytes==0.38.1", or plain LoRA (drop quantization_bit)'
    )
    assert "Traceback" not in result.stderr
    assert _events(tmp_path) == ["prepare_args"]  # stopped there: no tokenizer, no model loaded


def test_8bit_on_rocm_without_a_library_gives_the_pin(tmp_path, tiny_llama, hooklog_site):
    result = _train(tmp_path, tiny_llama, hooklog_site, "rocm", "6.2.41133", quantization_bit=8)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "lfkit: error: quantization_bit: 8 needs bitsandbytes, which cannot work here: "
        "bitsandbytes 0.50.2 ships no library for ROCm 6.2"
    )
    assert 'fix: pip install "bitsandbytes==0.49.2"' in last
    assert _events(tmp_path) == ["prepare_args"]


def test_doctor_prints_the_pin_for_the_platform(tmp_path):
    env = clean_env(PYTHONPATH=str(TESTS / "sim_site"), LFKIT_TEST_SIMULATE="dtk", LFKIT_TEST_HIP="5.7.24164")
    result = run([BIN / "lfkit", "doctor", "--json"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["platform"]["kind"] == "dtk"
    bnb = report["bitsandbytes"]
    assert (bnb["fits"], bnb["pin"], bnb["hidden"]) == (False, 'pip install "bitsandbytes==0.38.1"', True)
    assert {row["platform"] for row in bnb["table"]} == {"dtk", "rocm", "cuda"}
    text = run([BIN / "lfkit", "doctor"], env=env).stdout
    assert 'fix: pip install "bitsandbytes==0.38.1"' in text


CONSTRAINTS = sorted((TESTS.parent / "constraints").glob("bitsandbytes-*.txt"))


def test_constraint_files_match_the_table():
    from lfkit.rocm_patches.bitsandbytes_pin import DTK_PIN, ROCM_WHEELS

    pins = {f.name: f.read_text().split("bitsandbytes==")[1].split()[0] for f in CONSTRAINTS}
    assert pins == {
        "bitsandbytes-dtk.txt": DTK_PIN,
        "bitsandbytes-rocm6.2-6.3.txt": "0.49.2",
        "bitsandbytes-rocm6.4+.txt": "0.50.2",
    }
    assert set(pins.values()) - {DTK_PIN} == set(ROCM_WHEELS)


@pytest.mark.parametrize("constraints", CONSTRAINTS, ids=lambda p: p.name)
def test_every_pin_is_installable(constraints, tmp_path):
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-deps",
            "--quiet",
            "--report",
            tmp_path / "r.json",
            "-c",
            constraints,
            "bitsandbytes",
        ],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installed = json.loads((tmp_path / "r.json").read_text())["install"]
    pinned = constraints.read_text().split("bitsandbytes==")[1].split()[0]
    assert [i["metadata"]["version"] for i in installed] == [pinned]
