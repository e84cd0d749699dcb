"""The five architecture- and version-dependent ROCm / DCU fixes: each failure first, in the real
library under a simulated platform, then the fix; on CUDA and on CPU each one touches nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import BIN, clean_env, deepspeed_release, make_dist, probe, run

pytestmark = pytest.mark.both_stacks

TESTS = Path(__file__).resolve().parent
SIM_SITE = TESTS / "sim_site"
NEW_PATCHES = {
    "rocm-bf16-emulated": "llamafactory.extras.misc",
    "rocm-expandable-segments": "llamafactory.cli or llamafactory.launcher (lfkit.lf_versions)",
    "rocm-flash-attn-arch": "llamafactory.model.model_utils.attention",
    "rocm-triton-gfx906": "llamafactory.hparams.parser",
    "deepspeed-rocm-cpu-adam": "deepspeed.ops.op_builder.builder",
}


def simulated(arch: str = "gfx906", hip: str = "6.2.41133", disable: str = "", *sites: Path, **extra) -> dict:
    """A subprocess whose torch looks like a HIP build with one card of ``arch`` (tests/sim_site)."""
    env = {"PYTHONPATH": os.pathsep.join([str(SIM_SITE), str(TESTS), *map(str, sites)]),
           "LFKIT_TEST_SIMULATE": "rocm", "LFKIT_TEST_ARCH": arch, "LFKIT_TEST_HIP": hip, **extra}  # fmt: skip
    if disable:
        env["LFKIT_DISABLE_PATCHES"] = disable
    return clean_env(**env)


STATE = """
from lfkit.plugin_manager import get_manager
def state(pid):
    s = get_manager().patches.states[pid]
    return [s.status.value, s.detail]
"""

# --- 1. bf16 on cards that only emulate it ---------------------------------------------------

BF16_PROBE = (
    STATE
    + """
import json, torch
from llamafactory.extras.misc import infer_optim_dtype
print("REPORT " + json.dumps({"dtype": str(infer_optim_dtype(torch.bfloat16)), "hip_says": torch.cuda.is_bf16_supported(),
                              "patch": state("rocm-bf16-emulated")}))
"""
)


def test_bf16_on_gfx906_reproduced_then_automatic_precision_is_fp16(tmp_path):
    broken = probe(BF16_PROBE, env=simulated("gfx906", disable="rocm-bf16-emulated"), cwd=tmp_path)
    assert broken["hip_says"] is True and broken["dtype"] == "torch.bfloat16"  # LLaMA-Factory trusts HIP
    fixed = probe(BF16_PROBE, env=simulated("gfx906"), cwd=tmp_path)
    assert fixed["dtype"] == "torch.float16"
    assert fixed["patch"] == ["applied", "gfx906 has no native bf16: automatic precision is fp16"]
    native = probe(BF16_PROBE, env=simulated("gfx90a"), cwd=tmp_path)
    assert native["dtype"] == "torch.bfloat16" and native["patch"] == ["skipped", "gfx90a has native bf16"]


def test_explicit_bf16_on_gfx906_stops_before_the_model_loads(tiny_llama, tmp_path):
    base = [BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
            f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    stopped = run([*base, "bf16=true"], env=clean_env(LFKIT_SIMULATE="rocm:gfx906"))
    assert stopped.returncode == 2
    (line,) = stopped.stderr.strip().splitlines()
    assert "gfx906 has no native bf16" in line and "use fp16: true" in line
    auto = run([*base, "bf16=auto", "fp16=false", "--dry-run"], env=clean_env(LFKIT_SIMULATE="rocm:gfx906"))
    assert auto.returncode == 0, auto.stderr
    (step,) = json.loads(auto.stdout)["steps"]
    assert step["args"]["bf16"] is False and "bf16: auto -> False (gfx906 has no native bf16)" in step["notes"]
    native = run([*base, "bf16=true", "fp16=false", "--dry-run"], env=clean_env(LFKIT_SIMULATE="rocm:gfx90a"))
    assert native.returncode == 0, native.stderr


# --- 2. expandable_segments for torchrun workers ---------------------------------------------

LAUNCH_PROBE = (
    STATE
    + """
import json, os, subprocess, sys
seen = {}
run = subprocess.run
def record(cmd, *args, **kwargs):
    if not (isinstance(cmd, list) and any("torchrun" in str(c) or "torch.distributed.run" in str(c) for c in cmd[:3])):
        return run(cmd, *args, **kwargs)  # what the imports run on the way (numpy asks lscpu on 0.9.3's path)
    seen["cmd"], seen["env"] = list(cmd), kwargs.get("env") or {}
    return subprocess.CompletedProcess(cmd, 0)
subprocess.run = record  # the bottom of whatever chain LLaMA-Factory's launch calls
from llamafactory.cli import main  # llamafactory-cli: torchrun starts in cli.py (0.9.3) or launcher.py (0.9.4+)
sys.argv = ["llamafactory-cli", "train", "args.yaml"]
try:
    main()
except SystemExit:
    pass
env = seen["env"]
print("REPORT " + json.dumps({
    "vars": {k: env.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_ALLOC_CONF")},
    "cmd0": seen["cmd"][0], "patch": state("rocm-expandable-segments")}))
"""
)
USER_ALLOC = {
    "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:256",
    "PYTORCH_HIP_ALLOC_CONF": "garbage_collection_threshold:0.8,expandable_segments:True",
}


def test_expandable_segments_reproduced_then_only_that_option_dropped(tmp_path):
    launch = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", **USER_ALLOC}
    broken = probe(LAUNCH_PROBE, env=simulated(hip="6.2.41133", disable="rocm-expandable-segments", **launch),
                   cwd=tmp_path)  # fmt: skip
    # LLaMA-Factory replaces the user's setting, and on HIP that variable is read first
    assert broken["vars"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    fixed = probe(LAUNCH_PROBE, env=simulated(hip="6.2.41133", **launch), cwd=tmp_path)
    assert fixed["vars"] == {
        "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:256",
        "PYTORCH_HIP_ALLOC_CONF": "garbage_collection_threshold:0.8",
        "PYTORCH_ALLOC_CONF": None,
    }
    from lfkit.installed_dists import version
    from lfkit.lf_versions import release

    old_torch = release(version("torch"))[:2] < (2, 11)  # the DCU stack's 2.1: no HIP support at all
    why = "has no expandable segments on HIP (added in 2.11)" if old_torch else "HIP 6.2.41133 is below ROCm 7.0"
    assert fixed["patch"][0] == "applied" and why in fixed["patch"][1], fixed["patch"]
    assert fixed["cmd0"] != "torchrun"  # the lf-torchrun patch still sits on the same call
    only_hip = {k: v for k, v in launch.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    fixed = probe(LAUNCH_PROBE, env=simulated(hip="6.2.41133", **only_hip), cwd=tmp_path)
    assert fixed["vars"]["PYTORCH_CUDA_ALLOC_CONF"] is None  # so HIP reads the user's own variable
    supported = probe(LAUNCH_PROBE, env=simulated(hip="7.1.25424", **launch), cwd=tmp_path)
    if old_torch:  # ROCm 7.1 does not help a torch before 2.11: still mended
        assert (
            supported["patch"][0] == "applied"
            and supported["vars"]["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:256"
        )
        return
    assert supported["patch"] == ["skipped", "this torch and HIP support expandable segments"]
    assert supported["vars"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


# --- 3. flash-attention on unsupported AMD architectures --------------------------------------

ATTN_PROBE = (
    STATE
    + """
import json, types
from transformers import LlamaConfig
from llamafactory.extras.constants import AttentionFunction
from llamafactory.model import patcher
report = {}
for asked in ("fa2", "auto"):
    config, model_args = LlamaConfig(), types.SimpleNamespace(flash_attn=AttentionFunction(asked))
    patcher.configure_attn_implementation(config, model_args)
    report[asked] = getattr(config, "_attn_implementation_internal", None) or getattr(config, "_attn_implementation", None)
report["patch"] = state("rocm-flash-attn-arch")
print("REPORT " + json.dumps(report))
"""
)


@pytest.fixture(scope="module")
def flash_attn_site(tmp_path_factory) -> Path:
    """flash-attn as pip installs it (a stand-in package: the kernels never run here). transformers 4.x
    imports its entry points and helpers (bert_padding, layers.rotary) as soon as the package is there."""
    site = make_dist(tmp_path_factory.mktemp("flash-attn"), "flash-attn", "2.6.3", {}, {})
    (site / "flash_attn-2.6.3.dist-info" / "top_level.txt").write_text("flash_attn\n")
    package = site / "flash_attn"
    package.mkdir()
    never = (
        "def {}(*args, **kwargs):\n    raise RuntimeError('a stand-in: flash-attn kernels never run in the tests')\n"
    )
    (package / "__init__.py").write_text(
        '__version__ = "2.6.3"\n' + "".join(never.format(f) for f in ("flash_attn_func", "flash_attn_varlen_func"))
    )
    helpers = {"bert_padding": ("index_first_axis", "pad_input", "unpad_input"), "layers/rotary": ("apply_rotary_emb",)}
    for module, names in helpers.items():
        path = package / f"{module}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(never.format(name) for name in names))
    (package / "layers" / "__init__.py").write_text("")
    return site


def test_flash_attention_on_gfx906_reproduced_then_sdpa(flash_attn_site, tmp_path):
    broken = probe(ATTN_PROBE, env=simulated("gfx906", "6.2.41133", "rocm-flash-attn-arch", flash_attn_site),
                   cwd=tmp_path)  # fmt: skip
    assert broken["fa2"] == "flash_attention_2"  # LLaMA-Factory asks for kernels gfx906 does not have
    fixed = probe(ATTN_PROBE, env=simulated("gfx906", "6.2.41133", "", flash_attn_site), cwd=tmp_path)
    assert fixed["fa2"] == fixed["auto"] == "sdpa"
    assert fixed["patch"] == ["applied", "gfx906: flash_attn auto / fa2 -> sdpa (flash-attention supports MI200 / "
                              "MI300 only)"]  # fmt: skip
    mi200 = probe(ATTN_PROBE, env=simulated("gfx90a", "6.2.41133", "", flash_attn_site), cwd=tmp_path)
    assert mi200["fa2"] == "flash_attention_2" and mi200["patch"][0] == "skipped"
    without_package = probe(ATTN_PROBE, env=simulated("gfx906"), cwd=tmp_path)
    assert without_package["patch"] == ["skipped", "the flash-attn package is not installed"]


# --- 4. Triton-based paths on gfx906 ---------------------------------------------------------

PARSER_PROBE = """
import json, sys
from llamafactory.hparams import get_train_args
args = json.loads(sys.argv[1])
model_args, _, training_args, _, _ = get_train_args(args)
print("REPORT " + json.dumps({"torch_compile": training_args.torch_compile}))
"""


def test_triton_paths_on_gfx906_reproduced_then_stopped_with_one_line(tiny_llama, tmp_path):
    args = {"model_name_or_path": str(tiny_llama), "stage": "sft", "do_train": True, "dataset": "telecom_demo",
            "template": "llama2", "output_dir": str(tmp_path / "lf"), "torch_compile": True, "report_to": "none"}  # fmt: skip
    code = PARSER_PROBE.replace("json.loads(sys.argv[1])", repr(args))
    # (no simulated card for transformers' own device set-up, which would reach for a real one)
    broken = probe(code, env=simulated("gfx906", disable="rocm-triton-gfx906", LFKIT_TEST_DEVICES="0"), cwd=tmp_path)
    assert broken["torch_compile"] is True  # LLaMA-Factory goes on to load the model; Triton fails later
    base = [BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
            f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    for switch in ("torch_compile=true", "enable_liger_kernel=true"):
        stopped = run([*base, switch], env=clean_env(LFKIT_SIMULATE="rocm:gfx906"))
        assert stopped.returncode == 2
        (line,) = stopped.stderr.strip().splitlines()
        key = switch.split("=")[0]
        assert (
            line == f"lfkit: error: {key}: true needs Triton, which does not support gfx906; drop {key} for this card"
        )
    fine = run([*base, "torch_compile=true", "--dry-run"], env=clean_env(LFKIT_SIMULATE="rocm:gfx90a"))
    assert fine.returncode == 0, fine.stderr


# --- 5. DeepSpeed CPUAdam for ZeRO offload ---------------------------------------------------

CPU_ADAM_PROBE = """
import json, torch
from deepspeed.ops.adam import DeepSpeedCPUAdam
import deepspeed
report = {"deepspeed": deepspeed.__version__}
try:
    DeepSpeedCPUAdam([torch.nn.Parameter(torch.zeros(4))])
    report["optimizer"] = "built"
except BaseException as exc:
    report["optimizer"] = f"{type(exc).__name__}: {exc}"
from lfkit.rocm_patches.deepspeed_cpu_adam import cpu_adam_problem
report["problem"] = cpu_adam_problem({"deepspeed": "z2-offload"})
report["no_offload"] = cpu_adam_problem({"deepspeed": "z2"})
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module", params=["0.16.9", "installed"])
def deepspeed_site(request, tmp_path_factory):
    return None if request.param == "installed" else deepspeed_release(tmp_path_factory, request.param)


@pytest.mark.slow
def test_cpu_adam_that_does_not_build_reproduced_then_stopped_before_training(deepspeed_site, tmp_path):
    # The build of the op fails as it does on the ROCm versions of the upstream reports; here the
    # compiler is made to fail, in a fresh extension cache, so nothing built earlier is loaded.
    failing = {"CXX": "/bin/false", "CC": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    sites = [deepspeed_site] if deepspeed_site else []
    report = probe(CPU_ADAM_PROBE, env=simulated("gfx906", "6.2.41133", "", *sites, **failing), cwd=tmp_path)
    assert report["optimizer"] != "built"  # where DeepSpeed fails without lfkit: after the model has loaded
    assert report["problem"].startswith("deepspeed=z2-offload: ZeRO offload needs DeepSpeed's CPUAdam op, which ")
    assert f"DeepSpeed {report['deepspeed']}" in report["problem"]
    assert '"zero_force_ds_cpu_optimizer": false' in report["problem"] and "deepspeed=z2 or z3" in report["problem"]
    assert report["no_offload"] is None


@pytest.mark.slow
def test_lfkit_run_with_offload_stops_in_one_line_where_cpu_adam_does_not_build(tiny_llama, tmp_path):
    env = clean_env(LFKIT_SIMULATE="rocm:gfx906", CXX="/bin/false", CC="/bin/false",
                    TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))  # fmt: skip
    result = run([BIN / "lfkit", "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                  "deepspeed=z2-offload", f"output_dir={tmp_path / 'run'}"], env=env)  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lfkit: error: deepspeed=z2-offload: ZeRO offload needs DeepSpeed's CPUAdam op")
    assert not (tmp_path / "run").exists()


# --- negative controls and the simulation switch ---------------------------------------------

CONTROL_PROBE = (
    STATE
    + """
import json, subprocess
import llamafactory.extras.misc as misc
import llamafactory.model.model_utils.attention as attention
import importlib
import llamafactory.hparams.parser
from lfkit.lf_versions import torchrun_module
launcher = importlib.import_module(torchrun_module())
import deepspeed.ops.op_builder.builder
from lfkit.rocm_patches import flash_attn_arch
report = {pid: state(pid) for pid in %r}
report["bf16_flag"] = misc._is_bf16_available
report["launcher_wrapped"] = launcher.subprocess._inner is not subprocess  # lf-torchrun's overlay only
report["attention_wrapped"] = attention.configure_attn_implementation.__module__ == flash_attn_arch.__name__
print("REPORT " + json.dumps(report))
"""
    % list(NEW_PATCHES)
)


@pytest.mark.parametrize("platform", ["cuda", "cpu"])
def test_on_cuda_and_cpu_every_new_fix_is_skipped_and_touches_nothing(platform, flash_attn_site, tmp_path):
    env = clean_env(PYTHONPATH=str(flash_attn_site), **({"LFKIT_SIMULATE": "cuda"} if platform == "cuda" else {}))
    report = probe(CONTROL_PROBE, env=env, cwd=tmp_path)
    for pid in NEW_PATCHES:
        assert report[pid] == ["skipped", f"platform is {platform}, patch is for dtk/rocm"], pid
    assert report["bf16_flag"] is False  # LLaMA-Factory's own answer on this CPU machine
    assert report["launcher_wrapped"] is False and report["attention_wrapped"] is False


def test_simulation_switch_reports_the_platform_without_touching_the_device(tmp_path):
    doctor = run([BIN / "lfkit", "doctor", "--json"], env=clean_env(LFKIT_SIMULATE="dtk:gfx906"))
    assert doctor.returncode == 0, doctor.stderr
    platform = json.loads(doctor.stdout)["platform"]
    assert platform["kind"] == "dtk" and platform["arch"] == "gfx906" and platform["native_bf16"] is False
    assert platform["simulated"] == "dtk:gfx906" and platform["gpus"][0]["memory_gib"] == 16.0
    patches = run([BIN / "lfkit", "patches", "--json"], env=clean_env(LFKIT_SIMULATE="rocm:gfx90a"))
    states = {p["id"]: p for p in json.loads(patches.stdout)}
    assert states["rocm-bf16-emulated"]["detail"] == "would skip: gfx90a has native bf16"
    assert states["rocm-triton-gfx906"]["detail"] == "would skip: gfx90a has Triton support"
    assert states["rocm-expandable-segments"]["detail"] == "would apply"  # HIP 6.2 by default
    real = run([BIN / "python", "-c", "import lfkit, torch; print(torch.version.hip, torch.cuda.is_available())"],
               env=clean_env(LFKIT_SIMULATE="rocm:gfx906"))  # fmt: skip
    assert real.stdout.split() == ["None", "False"]
    bad = run([BIN / "lfkit", "doctor", "--json"], env=clean_env(LFKIT_SIMULATE="rocm:sm80"))
    assert bad.returncode == 0 and json.loads(bad.stdout)["platform"]["simulated"] is None
    assert any("LFKIT_SIMULATE=rocm:sm80" in p["what"] for p in json.loads(bad.stdout)["problems"])
    # said at every command, not only by doctor: a run would otherwise go on as this machine without a word
    assert bad.stderr.splitlines()[0].startswith("lfkit: warning: LFKIT_SIMULATE=rocm:sm80: an AMD architecture")
    hip = run([BIN / "lfkit", "patches", "--json"], env=clean_env(LFKIT_SIMULATE="rocm:gfx9999:abc"))
    assert hip.returncode == 0 and hip.stderr.splitlines() == [
        "lfkit: warning: LFKIT_SIMULATE=rocm:gfx9999:abc: the HIP version is numbers and dots, e.g. rocm:gfx906:6.2; "
        "ignored, this machine's own platform answers"
    ]


def test_plan_under_simulation_holds_the_run_against_the_simulated_card(tmp_path):
    config = TESTS / "fixtures" / "model_configs" / "Llama-2-7b-hf"
    result = run([BIN / "lfkit", "plan", "sft-lora-single", f"model={config}", "dataset=telecom_demo",
                  "finetuning_type=freeze", "cutoff_len=1024", "--json"], env=clean_env(LFKIT_SIMULATE="dtk:gfx906"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    (step,) = json.loads(result.stdout)["steps"]
    assert step["target_bytes"] == 16 * 2**30 and step["fits"] is False
    assert step["assumes"]["dtype"] == "float16"  # fp16: auto on the simulated card
    changes = [s["change"] for s in step["suggestions"]]
    assert "finetuning_type=lora quantization_bit=8" in changes  # QLoRA as DTK's bitsandbytes has it: 8-bit only
    assert all("quantization_bit=4" not in c for c in changes)
