"""Installing lfkit never changes the stack it is installed beside.

A DCU user's environment holds DTK's torch build and the LLaMA-Factory, transformers and peft
that run on it; a pip install that replaced any of them would take the cards away from every
program of that environment. Real pip installs the checkout, with its dependencies, into a
throw-away virtual environment that sees this test environment's packages (through a path
entry: pip counts them as installed and could only replace them by installing over them in the
throw-away one). On the DCU stack (torch 2.1.2, LLaMA-Factory 0.9.3) this is the case that
matters; on the newest stack it holds too.
"""

import json
import shutil
import site
import subprocess
import sys

import pytest

from conftest import REPO, clean_env, run

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]

# What a user's environment brings and lfkit must leave as it is.
KEPT = ("torch", "torchvision", "torchaudio", "transformers", "peft", "accelerate", "llamafactory", "numpy",
        "pyarrow", "deepspeed", "bitsandbytes", "datasets")  # fmt: skip

VERSIONS = """
import json
from importlib.metadata import PackageNotFoundError, distribution
found = {}
for name in %r:
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    found[name] = [dist.version, str(dist.locate_file(""))]
print(json.dumps(found))
""" % (KEPT,)


def _versions(python) -> dict[str, list[str]]:
    result = run([python, "-c", VERSIONS], env=clean_env(LFKIT_AUTOLOAD="0"), cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory):
    venv = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "zz_user_stack.pth").write_text(site.getsitepackages()[0] + "\n")
    return venv, purelib


def _pip(venv, *args):
    cmd = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", *args]
    return run(cmd, env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"), timeout=600)


def test_pip_install_of_the_checkout_leaves_the_users_stack_as_it_was(throwaway, tmp_path):
    venv, purelib = throwaway
    # a copy, so pip's build folder stays out of the checkout
    source = tmp_path / "lfkit"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv*", ".git", "runs", "build", "*.egg-info"))
    before = _versions(sys.executable)
    assert {"torch", "transformers", "llamafactory"} <= before.keys()

    report = tmp_path / "report.json"
    planned = _pip(venv, "install", "--dry-run", "--quiet", "--report", report, str(source))
    assert planned.returncode == 0, planned.stderr[-3000:]
    would_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert not would_install & set(KEPT), f"pip would replace {sorted(would_install & set(KEPT))}"

    installed = _pip(venv, "install", "--quiet", str(source))
    assert installed.returncode == 0, installed.stderr[-3000:]
    after = _versions(venv / "bin" / "python")
    assert after == before  # same versions, from the same folders: nothing installed over them
    assert not [p.name for p in purelib.iterdir() if p.name.split("-")[0].lower() in KEPT]
    # and lfkit itself is there, from the wheel pip built
    assert any(p.name.startswith("lfkit-") and p.name.endswith(".dist-info") for p in purelib.iterdir())


def test_the_torch_requirement_keeps_dtk_builds_whose_versions_are_pre_releases():
    """DTK names its torch builds as pre-releases (the DCU field guide's 2.1.0a0+git793d2b5.abi0.dtk2310): a
    requirement that did not count them would make pip install PyPI's torch over DTK's."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = (REPO / "pyproject.toml").read_text()
    (torch,) = [Requirement(r) for r in re.findall(r'^\s*"(torch[<>=!~][^"]*)"', pyproject, re.M)]
    for build in ("2.1.0a0+git793d2b5.abi0.dtk2310", "2.1.0+das.opt1.dtk24042", "2.3.0a0+git1b8c6bf", "2.1.2"):
        assert torch.specifier.contains(Version(build), prereleases=True), build
