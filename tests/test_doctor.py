import json
import sys

import pytest

from conftest import BIN, REPO, clean_env, run
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


@pytest.mark.both_stacks
def test_doctor_says_which_supported_stack_this_is():
    report = json.loads(run([LFKIT, "doctor", "--json"]).stdout)
    versions, stack = report["versions"], report["stack"]
    lf, torch, python = versions["llamafactory"], versions["torch"], report["python"]
    row = "DTK" if lf.startswith("0.9.3") else "ROCm / CUDA / CPU"
    assert (stack["llamafactory"], stack["torch"], stack["python"]) == (lf, torch, python)
    assert stack["row"]["name"] == row and stack["outside"] == []
    assert stack["line"].startswith(f"LLaMA-Factory {lf} + torch {torch} + Python {python} — the {row} row (")
    if (lf, torch, versions["transformers"]) == ("0.9.3", "2.1.2", "4.52.4"):  # CI's DTK stack
        assert stack["line"].endswith("the DTK row (tested in CI with transformers 4.52.4)")
    table = run([LFKIT, "doctor"], env=clean_env(COLUMNS="80"))
    assert f"stack: {stack['line']}\n" in table.stdout  # one line at any terminal width


def stack_line(**found):
    from lfkit.doctor import stack_report

    python = found.pop("python")
    return stack_report(found, python)["line"]


def test_the_stack_line_places_each_combination_or_says_which_part_is_outside():
    # DTK's own torch builds: a pre-release and a local tag, still torch 2.1 and 2.4
    assert stack_line(llamafactory="0.9.3", torch="2.1.0a0+git793d2b5.abi0.dtk2310", python="3.10.12") == (
        "LLaMA-Factory 0.9.3 + torch 2.1.0a0+git793d2b5.abi0.dtk2310 + Python 3.10.12 — the DTK row "
        "(tested in CI with torch 2.1.2 + transformers 4.52.4)"
    )
    assert stack_line(llamafactory="0.9.3", torch="2.4.1+das.opt1.dtk25041", python="3.10.12").endswith(
        "— the DTK row (tested in CI with torch 2.1.2 + transformers 4.52.4)"
    )
    assert stack_line(llamafactory="0.9.5", torch="2.11.0+cu130", python="3.11.7") == (
        "LLaMA-Factory 0.9.5 + torch 2.11.0+cu130 + Python 3.11.7 — the ROCm / CUDA / CPU row (the combination CI tests)"
    )
    assert stack_line(llamafactory="0.9.4", torch="2.5.1+rocm6.2", python="3.12.3").endswith(
        "— the ROCm / CUDA / CPU row (tested in CI with LLaMA-Factory 0.9.5 + torch 2.11.0)"
    )
    assert stack_line(llamafactory="0.9.3", torch="2.6.0", python="3.10.12") == (
        "LLaMA-Factory 0.9.3 + torch 2.6.0 + Python 3.10.12 — outside every supported row: "
        "torch 2.6.0 is outside the DTK row (torch 2.1 – 2.5)"
    )
    assert stack_line(llamafactory="0.9.5", torch="2.1.2", python="3.10.12") == (
        "LLaMA-Factory 0.9.5 + torch 2.1.2 + Python 3.10.12 — outside every supported row: "
        "torch 2.1.2 is outside the ROCm / CUDA / CPU row (torch 2.4 +); "
        "Python 3.10.12 is outside the ROCm / CUDA / CPU row (Python 3.11 +); "
        "torch 2.1.2 with Python 3.10.12 fit the DTK row, which takes LLaMA-Factory 0.9.3"
    )
    assert stack_line(llamafactory="0.9.2", torch="2.1.2", python="3.10.12").endswith(
        "outside every supported row: LLaMA-Factory 0.9.2 is in no row (the rows take LLaMA-Factory 0.9.3 or 0.9.4 – 0.9.5)"
    )
    assert stack_line(llamafactory=None, torch="2.1.2", python="3.10.12") == (
        "LLaMA-Factory absent + torch 2.1.2 + Python 3.10.12 — outside every supported row: LLaMA-Factory is not installed"
    )


def test_the_stack_rows_cover_the_supported_releases_and_name_what_ci_installs():
    from packaging.specifiers import SpecifierSet

    from lfkit.lf_versions import STACKS, SUPPORTED

    for release in ("0.9.2", "0.9.3", "0.9.4", "0.9.5", "0.9.6", "0.10.0"):
        rows = [s.name for s in STACKS if s.llamafactory.holds(release)]
        assert len(rows) == (1 if release in SpecifierSet(SUPPORTED) else 0), (release, rows)
    for stack in STACKS:
        pins = dict(
            line.split("#")[0].strip().split("==")
            for line in (REPO / stack.constraints).read_text().splitlines()
            if "==" in line.split("#")[0]
        )
        assert "torch" in pins, stack.constraints
        for dist, version in stack.ci.items():
            assert pins.get(dist, version) == version, (stack.constraints, dist)
        for part in ("llamafactory", "torch"):
            assert getattr(stack, part).holds(stack.ci[part]), (stack.name, part)
