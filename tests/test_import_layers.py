"""The direction of imports is a contract: CLI above the features above the core, and no circle.

scripts/lint_imports.py lays the folders out as installed and runs import-linter's
contract (.importlinter) and a circle search over grimp's graph (imports inside
functions included). It passes on this checkout and fails on a copy with a
deliberate upward import, or a deliberate circle.
"""

import shutil
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli that pytest requires there
    import tomli as tomllib

from conftest import REPO, run

SCRIPT = REPO / "scripts" / "lint_imports.py"


def _checkout_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("pyproject.toml", ".importlinter"):
        shutil.copy(REPO / name, copy / name)
    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for folder in folders:
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _lint(root: Path):
    return run([sys.executable, SCRIPT, "--root", root])


def test_the_checkout_keeps_the_layers_and_has_no_circle():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in result.stdout
    assert "no import circle among lfkit's modules" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = _checkout_copy(tmp_path)
    atomic = copy / "lfkit" / "atomic.py"
    atomic.write_text(atomic.read_text() + "\n\ndef _upward():\n    from lfkit.cli.app import app\n\n    return app\n")
    result = _lint(copy)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "lfkit.atomic -> lfkit.cli.app" in result.stdout


def test_a_circle_between_features_is_found(tmp_path):
    copy = _checkout_copy(tmp_path)
    run_folder = copy / "recipes" / "run_folder.py"
    run_folder.write_text(
        run_folder.read_text() + "\n\ndef _back():\n    from .runner import Runner\n\n    return Runner\n"
    )
    result = _lint(copy)
    assert result.returncode == 1
    circle = next(line for line in result.stdout.splitlines() if line.startswith("import circle of"))
    assert "lfkit.recipes.run_folder" in circle and "lfkit.recipes.runner" in circle
