import json
import sys

import pytest

from conftest import BIN, clean_env, run
from lfkit.platform_detect import detect_platform

LFKIT = BIN / "lfkit"


def test_doctor_json_reports_everything_the_issue_names():
    result = run([LFKIT, "doctor", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    platform = report["platform"]
    assert platform["kind"] == "cpu"
    assert "no CUDA device is visible" in platform["reason"] or "no CUDA or HIP" in platform["reason"]
    assert platform["torch_version"]
    versions = report["versions"]
    for name in ("llamafactory", "transformers", "peft", "trl", "deepspeed", "bitsandbytes", "xformers"):
        assert name in versions
    assert versions["llamafactory"].startswith("0.9.")
    assert versions["xformers"] is None  # absent here, and said so
    activation = report["activation"]
    assert activation["autoload_on"] is True
    assert activation["autoload_pth"].endswith("lfkit-autoload.pth")
    assert activation["activated_at_start"] is True
    patches = {p["id"]: p for p in report["patches"]}
    assert patches["lf-hook-model-load"]["status"] == "waiting"
    assert patches["lf-hook-model-load"]["detail"] == "would apply"


def test_doctor_says_when_activation_is_off():
    result = run([LFKIT, "doctor", "--json"], env=clean_env(LFKIT_AUTOLOAD="0"))
    activation = json.loads(result.stdout)["activation"]
    assert activation["autoload_on"] is False
    assert activation["activated_at_start"] is False


def test_doctor_table():
    result = run([LFKIT, "doctor"])
    assert result.returncode == 0, result.stderr
    assert "platform: cpu" in result.stdout
    assert "lf-hook-prepare-args" in result.stdout


@pytest.fixture
def torch_mod(monkeypatch):
    import torch

    monkeypatch.delenv("DTK_PATH", raising=False)
    monkeypatch.delenv("ROCM_PATH", raising=False)
    return torch


def test_simulated_rocm(torch_mod, monkeypatch):
    monkeypatch.setattr(torch_mod.version, "hip", "6.3.42131")
    platform = detect_platform()
    assert (platform.kind, platform.hip_version) == ("rocm", "6.3.42131")
    assert platform.reason == "torch.version.hip=6.3.42131"


def test_simulated_dtk_from_the_torch_version(torch_mod, monkeypatch):
    monkeypatch.setattr(torch_mod.version, "hip", "5.7.24164")
    monkeypatch.setattr(torch_mod, "__version__", "2.1.0a0+git793d2b5.abi0.dtk2310")
    platform = detect_platform()
    assert (platform.kind, platform.dtk_version) == ("dtk", "23.10")


def test_simulated_dtk_from_its_toolkit_folder(torch_mod, monkeypatch, tmp_path):
    root = tmp_path / "dtk-24.04"
    (root / ".info").mkdir(parents=True)
    (root / ".info" / "version").write_text("24.04\n")
    monkeypatch.setenv("DTK_PATH", str(root))
    monkeypatch.setattr(torch_mod.version, "hip", "6.2.0")
    platform = detect_platform()
    assert (platform.kind, platform.dtk_version, platform.dtk_root) == ("dtk", "24.04", str(root))


def test_patches_lists_without_importing_torch(tmp_path):
    """`lfkit patches` answers from torch's version file; where only torch can answer (a HIP build's
    GPU architecture), it says so instead of importing torch (seconds)."""
    code = (
        "import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules, file=sys.stderr)); "
        "from lfkit.cli.main import main; sys.argv = ['lfkit', 'patches', '--json']; main()"
    )
    result = run([sys.executable, "-c", code], env=clean_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "TORCH False"
    details = {r["id"]: r["detail"] for r in json.loads(result.stdout)}
    assert details["rocm-bf16-emulated"] == "would skip: platform is cpu, patch is for dtk/rocm"
    # a ROCm build of torch that must not be imported: its version file says HIP, its import fails
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported')\n")
    (fake / "version.py").write_text("__version__ = '2.5.1+rocm6.2'\ncuda = None\nhip = '6.2.41133'\n")
    rocm = run([BIN / "lfkit", "patches", "--json"], env=clean_env(PYTHONPATH=str(tmp_path / "site")))
    assert rocm.returncode == 0, rocm.stderr[-2000:]
    details = {r["id"]: r["detail"] for r in json.loads(rocm.stdout)}
    assert details["rocm-bf16-emulated"] == details["deepspeed-rocm-cuda-check"] == "decided when torch loads"
    assert details["lf-hook-model-load"] == "would apply"
