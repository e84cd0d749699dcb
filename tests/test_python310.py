"""lfkit runs on Python 3.10 (DTK's torch builds are made for it); no 3.10 interpreter is here, so vermin
reads the sources (scripts/check_py310.sh, which `make lint` runs too) and names each file that needs more.

The check is shown to catch what 3.10 lacks, and to pass what 3.10 runs although it reads newer:
annotations under ``from __future__ import annotations``, ``typing_extensions``, a ``tomllib`` import
guarded by the Python version, ``X | None``, ``match``.
"""

import re
import shutil
from pathlib import Path

from conftest import BIN, REPO, run

SCRIPT = REPO / "scripts" / "check_py310.sh"
VERMIN = BIN / "vermin"
FOLDERS = ("lfkit dataset_registry evaluation launching llamaboard planning plugins recipes rocm_patches "
           "tests benchmarks scripts").split()  # fmt: skip

NEEDS_311 = {
    "tomllib.py": "import tomllib\n",
    "self_type.py": "from typing import Self\n",
    "utc.py": "import datetime\n\nWHEN = datetime.datetime.now(datetime.UTC)\n",
    "groups.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "exception_group.py": "raise ExceptionGroup('two', [ValueError(), KeyError()])\n",
    "str_enum.py": "import enum\n\n\nclass Kind(enum.StrEnum):\n    A = 'a'\n",
    # typer evaluates a command's annotations at run time: a 3.11 name there fails on 3.10 too
    "annotation.py": "from __future__ import annotations\n\nimport typing\n\n\ndef me() -> typing.Self: ...\n",
}
RUNS_ON_310 = """\
from __future__ import annotations

import sys

from typing_extensions import Self

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class Step:
    def named(self, name: str | None = None, args: dict[str, list[int]] | None = None) -> Self:
        match name:
            case None:
                return self
        return self


print(tomllib)
"""


def needs_newer(result) -> list[str]:
    """The files vermin says need a Python newer than 3.10 (its lines ``!2, 3.11     path``)."""
    return re.findall(r"^!2, 3\.1[1-9]\s+(\S+)", result.stdout, re.M)


def check(root: Path):
    assert VERMIN.is_file(), f"{VERMIN} is missing: vermin is in lfkit's test extra (pip install -e '.[test]')"
    return run(["bash", root / "scripts" / "check_py310.sh", VERMIN])


def test_no_file_needs_a_python_newer_than_310():
    result = check(REPO)
    assert result.returncode == 0 and not needs_newer(result), (
        f"files that need a Python newer than 3.10: {needs_newer(result)}\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    )


def test_the_check_names_each_file_that_needs_311_and_passes_what_310_runs(tmp_path):
    root = tmp_path / "checkout"
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    (root / "lfkit" / "runs_on_310.py").write_text(RUNS_ON_310)
    # an attribute named `file`, which vermin on its own takes for Python 2's builtin
    (root / "lfkit" / "attribute.py").write_text(
        "def same(found, name, spec):\n    return found[name].file == spec.file\n"
    )
    passed = check(root)
    assert passed.returncode == 0, passed.stdout

    for name, source in NEEDS_311.items():
        (root / "tests" / name).write_text(source)
    result = check(root)
    assert result.returncode == 1
    assert sorted(needs_newer(result)) == sorted(f"tests/{name}" for name in NEEDS_311), result.stdout
