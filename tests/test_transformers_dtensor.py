"""transformers 4.52 on torch < 2.5 (the DCU stack): save_pretrained's DTensor import, the real failure in
the real library, then lfkit's fix. On a stack with nothing to fix (torch >= 2.5) the patch says why and
leaves transformers as it is; each test asserts the one or the other, on both stacks.
"""

import json
from importlib.metadata import version

import pytest
from packaging.version import Version

from conftest import BIN, clean_env, probe, py, run
from lfkit.rocm_patches import transformers_dtensor

pytestmark = pytest.mark.both_stacks
PATCH_ID = "transformers-dtensor-import"
TORCH, TRANSFORMERS = version("torch"), version("transformers")
NEEDS_FIX = Version(TORCH).release[:2] < (2, 5) and Version(TRANSFORMERS).release[:2] == (4, 52)
STACK = f"torch {TORCH}, transformers {TRANSFORMERS}"


def nothing_to_fix_here() -> str | None:
    """The reason the patch should give on this stack (None: it must apply)."""
    if NEEDS_FIX:
        return None
    if Version(TORCH).release[:2] >= (2, 5):
        return f"torch {TORCH} has DTensor in torch.distributed.tensor"
    if Version(TRANSFORMERS) < Version("4.52"):
        return f"transformers {TRANSFORMERS} does not import DTensor on torch < 2.5"
    return f"transformers {TRANSFORMERS} imports DTensor only on torch >= 2.5"


@pytest.mark.parametrize(
    ("torch", "transformers", "reason"),
    [
        ("2.1.2+cu121", "4.52.4", None),
        ("2.1.0a0+git793d2b5.abi0.dtk2310", "4.52.0", None),  # DTK 23.10's torch
        ("2.1.0+das.opt1.dtk24042", "4.52.3", None),
        ("2.4.1+rocm6.1", "4.52.4", None),
        ("2.5.1", "4.52.4", "torch 2.5.1 has DTensor in torch.distributed.tensor"),
        ("2.11.0", "5.6.0", "torch 2.11.0 has DTensor in torch.distributed.tensor"),
        ("2.1.2", "4.51.3", "transformers 4.51.3 does not import DTensor on torch < 2.5"),
        ("2.1.2", "4.53.0", "transformers 4.53.0 imports DTensor only on torch >= 2.5"),
        ("2.1.2", "5.6.0", "transformers 5.6.0 imports DTensor only on torch >= 2.5"),
        (None, "4.52.4", "torch is not installed"),
        ("2.1.2", None, "transformers is not installed"),
    ],
)
def test_the_condition_reads_the_versions(monkeypatch, torch, transformers, reason):
    installed = {"torch": torch, "transformers": transformers}
    monkeypatch.setattr(transformers_dtensor, "distribution_version", installed.get)
    assert transformers_dtensor.nothing_to_fix() == reason


def test_lfkit_patches_says_what_would_happen_without_importing_torch():
    expected = "would apply" if NEEDS_FIX else f"would skip: {nothing_to_fix_here()}"
    result = run([BIN / "lfkit", "patches", "--json"])
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(row for row in json.loads(result.stdout) if row["id"] == PATCH_ID)
    assert (row["status"], row["detail"]) == ("waiting", expected), STACK
    assert (row["platforms"], row["requires"]) == ("all", {})

    asked = py(
        """
        import sys
        from lfkit.rocm_patches.transformers_dtensor import nothing_to_fix
        print(repr(nothing_to_fix()), "torch" in sys.modules)
        """
    )
    assert asked.stdout.split()[-1] == "False", asked.stderr[-2000:]


PROBE = """
import json, os, tempfile
import torch
import torch.distributed.tensor
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, modeling_utils, pytorch_utils
from lfkit.plugin_manager import get_manager

def attempt(fn):
    try:
        return fn()
    except BaseException as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"

def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)

def save_and_load_back(model, folder):
    model.save_pretrained(folder)  # safetensors, the default
    return same(weights(model), weights(AutoModelForCausalLM.from_pretrained(folder)))

def state():
    s = get_manager().patches.states["transformers-dtensor-import"]
    return [s.status.value, s.detail]

def mended():
    return [hasattr(getattr(pytorch_utils, "id_tensor_storage", None), "__wrapped__"),
            hasattr(getattr(modeling_utils, "id_tensor_storage", None), "__wrapped__"),
            hasattr(modeling_utils, "DTensor")]

out = tempfile.mkdtemp(dir=".")
report = {}
model = AutoModelForCausalLM.from_pretrained(os.environ["TINY_MODEL"])
base = weights(model)
report["save"] = attempt(lambda: save_and_load_back(model, f"{out}/saved"))

# LLaMA-Factory's export: merge a LoRA adapter into the base, then save the merged model.
torch.manual_seed(0)
lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
merged = get_peft_model(model, lora).merge_and_unload()
report["merge_changed_weights"] = not same(weights(merged), base)
report["merged_save"] = attempt(lambda: save_and_load_back(merged, f"{out}/merged"))

report["patch"] = state()
report["mended"] = mended()
# transformers gets the name; torch's own module stays as torch made it
report["torch_has_public_dtensor"] = hasattr(torch.distributed.tensor, "DTensor")
get_manager().patches.revert("transformers-dtensor-import")
report["after_revert"] = mended()
report["save_after_revert"] = attempt(lambda: save_and_load_back(merged, f"{out}/reverted"))
print("REPORT " + json.dumps(report))
"""
IMPORT_ERROR = "ImportError: cannot import name 'DTensor' from 'torch.distributed.tensor'"


def _probe(tiny_llama, tmp_path, *, lfkit_fix: bool) -> dict:
    extra = {"TINY_MODEL": str(tiny_llama)}
    if not lfkit_fix:
        extra["LFKIT_DISABLE_PATCHES"] = PATCH_ID
    return probe(PROBE, env=clean_env(**extra), cwd=tmp_path)


@pytest.mark.slow
def test_save_and_merged_save_fail_without_the_fix_and_work_with_it(tiny_llama, tmp_path):
    broken = _probe(tiny_llama, tmp_path, lfkit_fix=False)
    fixed = _probe(tiny_llama, tmp_path, lfkit_fix=True)
    assert broken["patch"] == ["disabled", "LFKIT_DISABLE_PATCHES"]
    assert broken["merge_changed_weights"] is fixed["merge_changed_weights"] is True
    reason = nothing_to_fix_here()
    if reason is not None:
        # Nothing to fix: transformers saves on its own and lfkit leaves it as it is.
        assert broken["save"] is broken["merged_save"] is True, STACK
        assert fixed["patch"] == ["skipped", reason], STACK
        assert fixed["mended"] == fixed["after_revert"] == broken["mended"], STACK
        assert fixed["torch_has_public_dtensor"] is True
        assert fixed["save"] is fixed["merged_save"] is fixed["save_after_revert"] is True
        return

    # The DCU stack: the real failure in the real library...
    assert broken["save"].startswith(IMPORT_ERROR), broken
    assert broken["merged_save"].startswith(IMPORT_ERROR), broken
    assert broken["mended"] == [False, False, False]
    # ...then lfkit's fix: both saves work and load back equal.
    assert fixed["patch"] == ["applied", "id_tensor_storage and save_pretrained use torch.distributed._tensor.DTensor"]
    assert fixed["mended"] == [True, True, True]
    assert fixed["torch_has_public_dtensor"] is False
    assert fixed["save"] is True, fixed
    assert fixed["merged_save"] is True, fixed
    # Revert gives transformers its own code back, and with it the failure.
    assert fixed["after_revert"] == [False, False, False]
    assert fixed["save_after_revert"].startswith(IMPORT_ERROR), fixed
