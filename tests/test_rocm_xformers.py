"""xFormers fallback for Baichuan2-style remote code, on simulated ROCm with a CUDA-built xFormers stand-in."""

import json
import os
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
XFORMERS = TESTS / "fixtures" / "xformers_cuda_build"
PATCH_ID = "xformers-remote-code-fallback"

PROBE = (
    """
import json, os, sys
import torch
from simulate_platform import simulate
if os.environ.get("SIM_KIND"):
    simulate(kind=os.environ["SIM_KIND"])
from transformers import AutoModelForCausalLM

import transformers
from packaging.version import Version
new_name = Version(transformers.__version__).release >= (4, 56)  # transformers 4.56 renamed torch_dtype
model = AutoModelForCausalLM.from_pretrained(os.environ["MODEL"], trust_remote_code=True,
                                             **{"dtype" if new_name else "torch_dtype": torch.float32})
module = sys.modules[type(model).__module__]
xops = module.xops
report = {"xops": None if xops is None else ("lfkit-sdpa" if getattr(xops, "__lfkit_fallback__", False) else xops.__name__)}
torch.manual_seed(0)
ids = torch.randint(3, model.config.vocab_size, (2, 12))
model.train()
try:
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    report["train_step"] = "ok"
    report["grads_finite"] = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        train_logits = model(input_ids=ids).logits
        # reference: the model's own causal attention (its non-xformers branch), same weights
        module.xops = None
        reference = model(input_ids=ids).logits
        module.xops = xops
    report["max_abs_diff"] = (train_logits - reference).abs().max().item()
except Exception as exc:
    report["train_step"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
from lfkit.plugin_manager import get_manager
state = get_manager().patches.states[%r]
report["patch"] = [state.status.value, state.detail]
print("REPORT " + json.dumps(report))
"""
    % PATCH_ID
)


def _probe(model, tmp_path, fixed=True, site=None, **env):
    paths = [str(TESTS), str(XFORMERS)] + ([str(site)] if site else [])
    extra = {"PYTHONPATH": os.pathsep.join(paths), "MODEL": str(model), **env}
    if not fixed:
        extra["LFKIT_DISABLE_PATCHES"] = PATCH_ID
    return probe(PROBE, env=clean_env(**extra), cwd=tmp_path)


def _older_transformers() -> list[str]:
    """A 4.x release beside the installed 5.x; the DCU stack's own transformers (4.52.4, the oldest the
    patch claims) is the installed one there, and 4.57 does not run on its torch 2.1."""
    from lfkit.installed_dists import version

    return ["4.57.3"] if not version("transformers").startswith("4.") else []


@pytest.fixture(scope="session", params=["installed", *_older_transformers()])
def transformers_site(request, tmp_path_factory):
    """The test environment's transformers, and on the newest stack a 4.x release the patch claims."""
    if request.param == "installed":
        return None
    # transformers 4.x refuses huggingface_hub 1.x: it brings the hub it was released with
    return built_once(tmp_path_factory, f"transformers-{request.param}",
                      lambda folder: pip_target(folder, f"transformers=={request.param}", "huggingface_hub==0.36.0"))  # fmt: skip


def test_training_step_fails_without_lfkit_and_matches_reference_with_it(tiny_baichuan2, tmp_path, transformers_site):
    broken = _probe(tiny_baichuan2, tmp_path, fixed=False, site=transformers_site, SIM_KIND="rocm")
    assert broken["xops"] == "xformers.ops"
    assert (
        broken["train_step"]
        == "NotImplementedError: No operator found for `memory_efficient_attention_forward` with inputs:"
    )

    fixed = _probe(tiny_baichuan2, tmp_path, site=transformers_site, SIM_KIND="rocm")
    assert fixed["patch"] == ["applied", "checks each remote-code module that transformers loads"]
    assert fixed["xops"] == "lfkit-sdpa"
    assert fixed["train_step"] == "ok"
    assert fixed["grads_finite"] is True
    assert fixed["max_abs_diff"] < 1e-5


def test_alibi_model_gets_xops_none_so_its_bias_survives(tiny_baichuan2_alibi, tmp_path):
    fixed = _probe(tiny_baichuan2_alibi, tmp_path, SIM_KIND="rocm")
    assert fixed["xops"] is None
    assert fixed["train_step"] == "ok"
    assert fixed["max_abs_diff"] == 0.0  # training now takes the very path that applies ALiBi


def test_on_cuda_or_cpu_the_patch_is_skipped_and_xformers_left_alone(tiny_baichuan2, tmp_path):
    report = _probe(tiny_baichuan2, tmp_path)
    assert report["patch"] == ["skipped", "platform is cpu, patch is for dtk/rocm"]
    assert report["xops"] == "xformers.ops"


def test_sdpa_fallback_semantics():
    import torch

    from lfkit.rocm_patches.xformers_fallback import SDPA_OPS

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8) for _ in range(3))  # xformers layout: batch, seq, heads, dim

    def reference(bias):
        w = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8**0.5 + bias
        return torch.einsum("bhqk,bkhd->bqhd", w.softmax(-1), v)

    causal = torch.full((5, 5), float("-inf")).triu(1)
    out = SDPA_OPS.memory_efficient_attention(q, k, v, attn_bias=SDPA_OPS.LowerTriangularMask())
    assert torch.allclose(out, reference(causal), atol=1e-6)
    tensor_bias = torch.randn(2, 3, 5, 5)
    out = SDPA_OPS.memory_efficient_attention(q, k, v, attn_bias=tensor_bias)
    assert torch.allclose(out, reference(tensor_bias), atol=1e-6)
    out = SDPA_OPS.memory_efficient_attention(q, k, v, attn_bias=SDPA_OPS.LowerTriangularMask().add_bias(tensor_bias))
    assert torch.allclose(out, reference(tensor_bias + causal), atol=1e-6)


def test_real_llamafactory_lora_run_on_baichuan2(tiny_baichuan2, tmp_path, hooklog_site):
    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "out"
    args = lora_train_args(tiny_baichuan2, out, trust_remote_code=True, lora_target="W_pack", dataset_dir=str(data))
    config = write_yaml(tmp_path / "train.yaml", args)
    log = tmp_path / "hooks.jsonl"
    env = clean_env(
        PYTHONPATH=os.pathsep.join([str(TESTS / "sim_site"), str(XFORMERS), str(hooklog_site)]),
        # a HIP torch with no visible GPU: the whole run goes on the CPU, where the stand-in's kernels refuse too
        LFKIT_TEST_SIMULATE="rocm",
        LFKIT_TEST_DEVICES="0",
        LFKIT_HOOKLOG=str(log),
    )
    result = run([BIN / "llamafactory-cli", "train", config], env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "xFormers cannot run here" in result.stderr
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == ["W_pack"]
    assert read_jsonl(log)[-1] == {**read_jsonl(log)[-1], "event": "callback.on_train_end", "global_step": 2}
