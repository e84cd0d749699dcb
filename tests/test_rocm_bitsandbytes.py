"""bitsandbytes on simulated ROCm / DTK with the real bitsandbytes 0.38.1 and the current release.

The failure of seed 000: an installed bitsandbytes that cannot load breaks plain
LoRA, because peft imports it whenever it is installed.

Each release (and a triton without triton.ops) is pip-installed into a folder of its own and put
first on the subprocess's PYTHONPATH, so the tests say the same on both stacks whatever bitsandbytes
the environment holds (the newest stack: 0.50.2; the DTK stack: its pin, 0.38.1).
"""

import importlib.util
import json
import os
import sys
from importlib import metadata
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

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]
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


# The current release (the newest row of the pin table), and the triton without triton.ops put beside
# 0.38.1 where the environment's own triton still has it: the newest stack's (torch 2.11's) triton.
CURRENT = "0.50.2"
TRITON_WITHOUT_OPS = "3.6.0"


@pytest.fixture(scope="session")
def bnb_0381(tmp_path_factory):
    return built_once(
        tmp_path_factory, "bitsandbytes-0.38.1", lambda folder: pip_target(folder, "bitsandbytes==0.38.1")
    )


@pytest.fixture(scope="session")
def bnb_current(tmp_path_factory):
    """The current release, whatever bitsandbytes this environment holds (its own on the DTK stack is 0.38.1)."""
    return built_once(
        tmp_path_factory, f"bitsandbytes-{CURRENT}", lambda folder: pip_target(folder, f"bitsandbytes=={CURRENT}")
    )


def _triton_has_ops() -> bool:
    """Whether this environment's triton still ships triton.ops (triton 2.x; triton 3.0 removed it). No import."""
    spec = importlib.util.find_spec("triton")
    return spec is not None and any((Path(p) / "ops").is_dir() for p in spec.submodule_search_locations or ())


@pytest.fixture(scope="session")
def triton_without_ops(tmp_path_factory) -> list[Path]:
    """What to put on PYTHONPATH for a triton without triton.ops: nothing where this environment's triton lacks
    it already (torch 2.11's triton 3.6), else a triton 3 of its own (DTK's torch 2.1 brings triton 2.1)."""
    if not _triton_has_ops():
        return []
    folder = built_once(
        tmp_path_factory,
        f"triton-{TRITON_WITHOUT_OPS}",
        lambda folder: pip_target(folder, f"triton=={TRITON_WITHOUT_OPS}"),
    )
    return [folder]


def _meets_its_torch_requirement(site: Path) -> bool:
    """Whether this environment's torch is in the range the bitsandbytes release installed in ``site`` requires
    (0.50.2: torch>=2.4,<3; DTK's torch 2.1 is not)."""
    from packaging.requirements import Requirement

    (dist,) = metadata.distributions(path=[str(site)])
    (torch_req,) = [r for r in map(Requirement, dist.requires or []) if r.name == "torch" and not r.marker]
    return torch_req.specifier.contains(metadata.version("torch"), prereleases=True)


# What bitsandbytes 0.50.2 raises when peft imports it under a torch older than 2.4 (DTK's torch 2.1).
NEEDS_TORCH_24 = "AttributeError: module 'torch.library' has no attribute 'register_fake'"


def _probe(tiny_llama, tmp_path, sites=(), fixed=True, **sim):
    env = clean_env(PYTHONPATH=os.pathsep.join([str(TESTS), *map(str, sites)]), TINY_MODEL=str(tiny_llama), **sim)
    if not fixed:
        env["LFKIT_DISABLE_PATCHES"] = PATCH_ID
    return probe(PROBE, env=env, cwd=tmp_path)


DTK = {"SIM_KIND": "dtk", "SIM_HIP": "5.7.24164"}


def test_0381_on_dtk_breaks_plain_lora_and_lfkit_hides_it(tiny_llama, tmp_path, bnb_0381, triton_without_ops):
    """0.38.1 with a triton that lacks triton.ops (triton 3, as pip brings it with a newer torch) breaks LoRA."""
    if _triton_has_ops():
        # The DTK stack: DTK's torch 2.1 brings triton 2.x, which still has triton.ops, so there 0.38.1 is the
        # pin that works, and lfkit leaves it alone. (Not possible on the newest stack: torch 2.11 needs triton 3.)
        kept = _probe(tiny_llama, tmp_path, [bnb_0381], **DTK)
        assert kept["lora"] == "ok"
        assert kept["visible"] is True
        assert kept["patch"] == ["skipped", "bitsandbytes 0.38.1 fits: the 0.38.1 ABI, 8-bit only"]

    sites = [bnb_0381, *triton_without_ops]
    broken = _probe(tiny_llama, tmp_path, sites, fixed=False, **DTK)
    assert broken["lora"] == "ModuleNotFoundError: No module named 'triton.ops'"
    assert broken["visible"] is True

    fixed = _probe(tiny_llama, tmp_path, sites, **DTK)
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False and fixed["transformers_sees_it"] is False
    status, detail = fixed["patch"]
    assert status == "applied"
    assert detail.startswith("hid bitsandbytes 0.38.1: bitsandbytes 0.38.1 imports triton.ops, which triton 3.")


def test_current_release_on_dtk_is_hidden_for_the_wrong_abi(tiny_llama, tmp_path, bnb_current):
    if not _meets_its_torch_requirement(bnb_current):
        # DTK's torch 2.1: an upgraded bitsandbytes breaks plain LoRA already at its import (it needs torch 2.4).
        # (Under a newer torch it imports on this CPU: what fails is loading its library on a DCU, not simulated.)
        broken = _probe(tiny_llama, tmp_path, [bnb_current], fixed=False, **DTK)
        assert broken["lora"] == NEEDS_TORCH_24
        assert broken["visible"] is True
    fixed = _probe(tiny_llama, tmp_path, [bnb_current], **DTK)
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False and fixed["transformers_sees_it"] is False
    assert fixed["patch"] == [
        "applied",
        f"hid bitsandbytes {CURRENT}: bitsandbytes {CURRENT} has no DTK build; DTK takes the 0.38.1 ABI",
    ]


def test_current_release_on_rocm_with_its_library_stays(tiny_llama, tmp_path, bnb_current):
    fixed = _probe(tiny_llama, tmp_path, [bnb_current], SIM_KIND="rocm", SIM_HIP="6.4.43482")
    assert fixed["visible"] is True and fixed["transformers_sees_it"] is True
    assert fixed["patch"] == ["skipped", f"bitsandbytes {CURRENT} fits: ships libbitsandbytes_rocm64"]
    if _meets_its_torch_requirement(bnb_current):
        assert fixed["lora"] == "ok"
    else:
        # The DTK stack's torch 2.1 under a simulated ROCm 6.4: no such build exists (torch 2.1 was built for
        # ROCm 5.x). lfkit judges the wheel's ROCm libraries only and leaves it visible; the import then fails on
        # bitsandbytes' own torch requirement (torch>=2.4), which pip keeps in a real install.
        assert fixed["lora"] == NEEDS_TORCH_24


def test_current_release_on_rocm_62_lacks_its_library(tiny_llama, tmp_path, bnb_current):
    fixed = _probe(tiny_llama, tmp_path, [bnb_current], SIM_KIND="rocm", SIM_HIP="6.2.41133")
    assert fixed["lora"] == "ok"
    assert fixed["visible"] is False and fixed["transformers_sees_it"] is False
    assert fixed["patch"][0] == "applied"
    assert "ships no library for ROCm 6.2 (ROCm libraries: 6.4, 7.0, 7.1, 7.2, 7.14, 7.15)" in fixed["patch"][1]


def test_on_cpu_bitsandbytes_is_left_alone(tiny_llama, tmp_path):
    report = _probe(tiny_llama, tmp_path)
    assert report["lora"] == "ok"
    assert report["visible"] is True
    assert report["patch"] == ["skipped", "platform is cpu, patch is for dtk/rocm"]


def _train(tmp_path, tiny_llama, hooklog_site, simulate, hip, sites=(), **extra):
    data = write_alpaca(tmp_path / "data")
    config = write_yaml(
        tmp_path / "train.yaml", lora_train_args(tiny_llama, tmp_path / "out", dataset_dir=str(data), **extra)
    )
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(TESTS / "sim_site"), str(hooklog_site), *map(str, sites)]),
        LFKIT_TEST_SIMULATE=simulate,
        LFKIT_TEST_HIP=hip,
        # A HIP torch with no visible device: the platform (and so the stop) comes from torch.version.hip, and
        # with a simulated device torch 2.1's inductor, imported with LLaMA-Factory (trl, deepspeed), asks the
        # real driver for the current device at import ("Found no NVIDIA driver"), before any hook runs.
        LFKIT_TEST_DEVICES="0",
        LFKIT_HOOKLOG=str(tmp_path / "hooks.jsonl"),
    )
    return run([BIN / "llamafactory-cli", "train", config], env=env)


def _events(tmp_path):
    return [e["event"] for e in read_jsonl(tmp_path / "hooks.jsonl")]


def test_4bit_on_dtk_stops_before_the_model_loads(tmp_path, tiny_llama, hooklog_site):
    result = _train(tmp_path, tiny_llama, hooklog_site, "dtk", "5.7.24164", quantization_bit=4)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "lfkit: error: 4-bit bitsandbytes quantization cannot work on DTK (the 0.38.1 ABI is 8-bit only): "
        'use quantization_bit: 8 with pip install "bitsandbytes==0.38.1", or plain LoRA (drop quantization_bit)'
    )
    assert "Traceback" not in result.stderr
    assert _events(tmp_path) == ["prepare_args"]  # stopped there: no tokenizer, no model loaded


def test_8bit_on_rocm_without_a_library_gives_the_pin(tmp_path, tiny_llama, hooklog_site, bnb_current):
    result = _train(tmp_path, tiny_llama, hooklog_site, "rocm", "6.2.41133", [bnb_current], quantization_bit=8)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "lfkit: error: quantization_bit: 8 needs bitsandbytes, which cannot work here: "
        f"bitsandbytes {CURRENT} ships no library for ROCm 6.2"
    )
    assert 'fix: pip install "bitsandbytes==0.49.2"' in last
    assert _events(tmp_path) == ["prepare_args"]


def test_doctor_prints_the_pin_for_the_platform(tmp_path, bnb_current):
    """The current release on DTK: doctor says it does not fit, gives the pin, and that processes hide it."""
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(TESTS / "sim_site"), str(bnb_current)]),
        LFKIT_TEST_SIMULATE="dtk",
        LFKIT_TEST_HIP="5.7.24164",
    )
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
