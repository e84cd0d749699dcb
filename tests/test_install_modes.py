"""lfkit installed both ways, editable and from a wheel, into fresh virtual environments.

Each environment gets its own lfkit; torch, LLaMA-Factory and the build tools are
borrowed from the test environment through a plain path entry (which, unlike a
site folder, runs none of that environment's .pth files).
"""

import json
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO, clean_env, run

pytestmark = pytest.mark.slow

IGNORE = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
PROBE = """
import importlib.util, json, sys
report = {"lfkit_at_start": "lfkit" in sys.modules,
          "heavy": [m for m in ("torch", "transformers", "llamafactory", "deepspeed") if m in sys.modules]}
import lfkit, lfkit.rocm_patches
report["lfkit_file"] = lfkit.__file__
report["rocm_patches_file"] = lfkit.rocm_patches.__file__
report["generic_top_level"] = [n for n in ("plugins", "recipes", "rocm_patches", "dataset_registry")
                               if importlib.util.find_spec(n) is not None]
import llamafactory.hparams.parser
from lfkit.plugin_manager import get_manager
report["prepare_args_patch"] = get_manager().patches.states["lf-hook-prepare-args"].status.value
print(json.dumps(report))
"""

# With the autoload off only the start matters: no need to import LLaMA-Factory (seconds) to see it.
START_PROBE = 'import json, sys; print(json.dumps({"lfkit_at_start": "lfkit" in sys.modules}))'


def _venv(tmp_path, name):
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "zz_test_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    return venv, purelib


def _pip(venv, *args):
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            *args,
        ],
        env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    assert result.returncode == 0, result.stderr


def _probe(venv, code=PROBE, **env):
    # cwd: away from the checkout, whose top-level folders python -c would otherwise see
    result = run([venv / "bin" / "python", "-c", code], env=clean_env(**env), cwd=venv)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    copy = tmp_path_factory.mktemp("src") / "lfkit"
    shutil.copytree(REPO, copy, ignore=IGNORE)
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, source]
    )
    assert result.returncode == 0, result.stderr
    (whl,) = out.glob("lfkit-*.whl")
    return whl


def test_wheel_holds_lfkit_and_the_pth_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"lfkit", "lfkit-autoload.pth", "lfkit-0.1.0.dist-info"}
    for sub in ("rocm_patches", "plugins", "dataset_registry", "recipes"):
        assert f"lfkit/{sub}/__init__.py" in names
    record = zipfile.ZipFile(wheel).read("lfkit-0.1.0.dist-info/RECORD").decode()
    assert "lfkit-autoload.pth," in record  # so pip uninstall removes it


def test_regular_install(tmp_path, wheel):
    venv, purelib = _venv(tmp_path, "regular")
    _pip(venv, wheel)
    assert (purelib / "lfkit-autoload.pth").is_file()
    report = _probe(venv)
    assert report["lfkit_at_start"] is True and report["heavy"] == []
    assert report["lfkit_file"] == str(purelib / "lfkit" / "__init__.py")
    assert report["rocm_patches_file"] == str(purelib / "lfkit" / "rocm_patches" / "__init__.py")
    assert report["generic_top_level"] == []
    assert report["prepare_args_patch"] == "applied"
    assert _probe(venv, START_PROBE, LFKIT_AUTOLOAD="0")["lfkit_at_start"] is False


def test_editable_install(tmp_path, source):
    venv, purelib = _venv(tmp_path, "editable")
    _pip(venv, "-e", source)
    assert (purelib / "lfkit-autoload.pth").is_file()
    report = _probe(venv)
    assert report["lfkit_at_start"] is True and report["heavy"] == []
    assert report["lfkit_file"] == str(source / "lfkit" / "__init__.py")
    assert report["rocm_patches_file"] == str(source / "rocm_patches" / "__init__.py")
    assert report["generic_top_level"] == []
    assert report["prepare_args_patch"] == "applied"
    assert _probe(venv, START_PROBE, LFKIT_AUTOLOAD="0")["lfkit_at_start"] is False
