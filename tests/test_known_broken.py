"""Known-broken combinations of installed packages: `lfkit doctor` names each with its one-line fix, and
an lfkit command that runs into the numpy / pyarrow one says it in one line (exit 2, no traceback).

The numpy / pyarrow mismatch is the real one: pyarrow 26 (built for NumPy 2) pip-installed into a
folder of its own, put first on PYTHONPATH of this environment's numpy 1 (the DCU stack's).
"""

import json
import sys

import pytest

from conftest import BIN, built_once, clean_env, pip_target, run
from lfkit.installed_dists import version
from lfkit.known_broken import DTENSOR_PATCH, numpy_pyarrow, transformers_dtensor
from lfkit.patching import Patch, PatchRegistry, Status

pytestmark = pytest.mark.both_stacks
LFKIT = BIN / "lfkit"
PYARROW = "26.0.1"  # the first release line that refuses numpy 1 (20 - 25 import and work with 1.26)


def test_pyarrow_26_with_numpy_1_is_named_with_its_fix():
    found = {"numpy": "1.26.4", "pyarrow": "26.0.1", "torch": "2.1.2"}
    problem = numpy_pyarrow(found)
    assert problem.what == (
        "pyarrow 26.0.1 needs NumPy 2 and numpy 1.26.4 is installed: `import datasets`, and so LLaMA-Factory, "
        'fails with "pyarrow requires NumPy 2.0 or newer"'
    )
    assert problem.fix == 'pip install "pyarrow<26" (keep numpy 1: torch 2.1.2 is built for it)'
    assert numpy_pyarrow({**found, "torch": "2.4.1"}).fix == 'pip install "pyarrow<26" (keep numpy 1)'
    for fine in ({"pyarrow": "25.0.1"}, {"pyarrow": "20.0.0"}, {"numpy": "2.2.6"}, {"pyarrow": None}):
        assert numpy_pyarrow({**found, **fine}) is None, fine


def _registry(status: Status | None) -> PatchRegistry:
    registry = PatchRegistry()
    if status is not None:
        registry.add(Patch(id=DTENSOR_PATCH, why="test", target="transformers.modeling_utils", apply=None), "test")
        registry.states[DTENSOR_PATCH].status = status
    return registry


def test_transformers_452_on_torch_below_25_without_its_fix_is_named():
    found = {"transformers": "4.52.4", "torch": "2.1.2"}
    missing = transformers_dtensor(_registry(None), found)
    assert missing.what.startswith("transformers 4.52.4 with torch 2.1.2: save_pretrained fails")
    assert missing.what.endswith(f"and this lfkit has no {DTENSOR_PATCH} fix")
    assert missing.fix == 'pip install "transformers<4.52"'
    disabled = transformers_dtensor(_registry(Status.DISABLED), found)
    assert "turned off by LFKIT_DISABLE_PATCHES" in disabled.what
    assert disabled.fix == f'take {DTENSOR_PATCH} out of LFKIT_DISABLE_PATCHES, or pip install "transformers<4.52"'
    assert "is failed" in transformers_dtensor(_registry(Status.FAILED), found).what
    assert transformers_dtensor(_registry(Status.APPLIED), found) is None
    # transformers 4.51 and 4.53 save on torch 2.1; any transformers saves on torch 2.5
    for fine in ({"transformers": "4.51.3"}, {"transformers": "4.53.0"}, {"torch": "2.5.1"}):
        assert transformers_dtensor(_registry(None), {**found, **fine}) is None, fine


def test_the_check_and_the_patch_agree_on_the_affected_transformers():
    from packaging.specifiers import SpecifierSet

    from lfkit.rocm_patches import transformers_dtensor as patch

    assert patch.PATCH.id == DTENSOR_PATCH
    for release in ("4.49.0", "4.50.0", "4.51.3", "4.52.0", "4.52.4", "4.53.0"):
        affected = SpecifierSet(patch.AFFECTED, prereleases=True).contains(release)
        named = transformers_dtensor(_registry(None), {"transformers": release, "torch": "2.1.2"}) is not None
        assert named == affected, release


def test_doctor_names_the_dtensor_problem_only_where_it_is_and_its_fix_is_off():
    result = run([LFKIT, "doctor", "--json"], env=clean_env(LFKIT_DISABLE_PATCHES=DTENSOR_PATCH))
    assert result.returncode == 0, result.stderr[-2000:]
    named = [p for p in json.loads(result.stdout)["problems"] if "save_pretrained fails" in p["what"]]
    transformers, torch = version("transformers"), version("torch")
    broken = transformers.startswith("4.52.") and tuple(map(int, torch.split(".")[:2])) < (2, 5)
    assert len(named) == (1 if broken else 0), named
    on = json.loads(run([LFKIT, "doctor", "--json"]).stdout)["problems"]
    assert not [p for p in on if "save_pretrained fails" in p["what"]]  # the patch applies when it is on


@pytest.fixture(scope="module")
def pyarrow_for_numpy2(tmp_path_factory):
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        pytest.skip(f"numpy {numpy.__version__} here: pyarrow {PYARROW} imports (the mismatch needs numpy 1)")
    return built_once(tmp_path_factory, f"pyarrow-{PYARROW}", lambda f: pip_target(f, f"pyarrow=={PYARROW}"))


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_numpy_1_with_pyarrow_26_fails_and_lfkit_says_it_in_one_line(pyarrow_for_numpy2, tmp_path):
    # a fresh lfkit home: no facts kept from an earlier import of LLaMA-Factory
    env = clean_env(PYTHONPATH=str(pyarrow_for_numpy2), LFKIT_HOME=str(tmp_path / "home"))
    real = run([sys.executable, "-c", "import datasets"], env=env)
    assert "ImportError: pyarrow requires NumPy 2.0 or newer" in real.stderr, real.stderr[-2000:]

    numpy = version("numpy")
    expected = (
        f"lfkit: error: pyarrow {PYARROW} needs NumPy 2 and numpy {numpy} is installed: `import datasets`, "
        'and so LLaMA-Factory, fails with "pyarrow requires NumPy 2.0 or newer"; fix: pip install "pyarrow<26"'
    )
    report = json.loads(run([LFKIT, "doctor", "--json"], env=env).stdout)
    assert [p for p in report["problems"] if p["what"].startswith(f"pyarrow {PYARROW} needs NumPy 2")]

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000}))  # fmt: skip
    args = [f"model={model}", "dataset=telecom_demo", f"output_dir={tmp_path / 'out'}"]
    assert one_error_line(run([LFKIT, "plan", "sft-lora-single", *args], env=env)).startswith(expected)
    assert one_error_line(run([LFKIT, "run", "sft-lora-single", *args, "--dry-run"], env=env)).startswith(expected)

    # a run's step process (where LLaMA-Factory's facts were kept before pyarrow changed): the same line
    step = tmp_path / "step"
    step.mkdir()
    (step / "run.json").write_text(json.dumps({"command": "train"}))
    (step / "llamafactory.yaml").write_text("stage: sft\n")
    assert one_error_line(run([sys.executable, "-m", "lfkit.recipes.step", step], env=env)).startswith(expected)


def test_torch_below_22_with_setuptools_81_is_named_with_its_fix():
    import importlib.util

    from lfkit.known_broken import torch_setuptools
    from lfkit.lf_versions import release

    problem = torch_setuptools({"torch": "2.1.0a0+git793d2b5.abi0.dtk2310", "setuptools": "84.2.1"})
    assert "No module named 'pkg_resources'" in problem.what and problem.fix == 'pip install "setuptools<81"'
    for fine in ({"torch": "2.2.0", "setuptools": "84.2.1"}, {"torch": "2.1.2", "setuptools": "80.10.2"}):
        assert torch_setuptools(fine) is None, fine
    # the fact it rests on, in the installed torch: read as text, importing it would need pkg_resources
    source = open(importlib.util.find_spec("torch.utils.cpp_extension").origin, encoding="utf-8").read()
    import torch

    older = release(torch.__version__)[:2] < (2, 2)
    assert ("from pkg_resources import" in source) == older


def test_transformers_452_on_torch_below_26_cannot_resume_and_is_named():
    import importlib.util

    from lfkit.known_broken import resume_torch_load

    problem = resume_torch_load({"transformers": "4.52.4", "torch": "2.1.2", "llamafactory": "0.9.3"})
    assert "resuming a training run from a checkpoint fails" in problem.what
    assert problem.fix.startswith('pip install "transformers<4.52"')
    # LLaMA-Factory 0.9.5 needs a transformers that has the check: there only a newer torch helps
    newer = resume_torch_load({"transformers": "4.57.1", "torch": "2.5.1", "llamafactory": "0.9.5"})
    assert newer.fix.startswith('pip install "torch>=2.6"')
    for fine in ({"transformers": "4.51.3", "torch": "2.1.2"}, {"transformers": "5.6.0", "torch": "2.11.0"}):
        assert resume_torch_load(fine) is None, fine
    # the fact it rests on, in the installed transformers (read as text)
    trainer = open(importlib.util.find_spec("transformers.trainer").origin, encoding="utf-8").read()
    if version("transformers").startswith("4.52."):
        assert "check_torch_load_is_safe()" in trainer
