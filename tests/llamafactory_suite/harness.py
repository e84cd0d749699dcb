"""Run LLaMA-Factory's own test suite with lfkit off and on, and compare the two.

The suite comes from the llamafactory sdist on PyPI (its ``tests/`` and ``data/``),
of the version installed here; the hub repositories it names are local stand-ins
(``standins.py``). Each mode runs in a fresh pytest process with the hub off:

- off: ``LFKIT_AUTOLOAD=0``, so no interpreter of the run loads lfkit at all;
- on: the environment as installed, lfkit's .pth active in every process.

``lfsuite_probe`` records each test's outcome and the arguments LLaMA-Factory's
parser received; ``compare`` lists every difference between the two records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent


# The newest release lfkit is tested on: its sdist's data/ serves a release whose sdist has none (0.9.3).
DATA_RELEASE = "0.9.5"


def sdist(cache: Path, lf_version: str | None = None) -> Path:
    """The unpacked llamafactory sdist (tests/ and data/, where it has them) of the installed version, or of
    ``lf_version`` (downloaded once into ``cache``)."""
    lf_version = lf_version or version("llamafactory")
    root = cache / f"llamafactory-{lf_version}"
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llamafactory=={lf_version}",
                "-d",
                tmp,
            ],  # fmt: skip
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        archive = next(Path(tmp).glob("llamafactory-*.tar.gz"))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] in (["tests"], ["data"])]
            tar.extractall(tmp, members=members, filter="data")
        (Path(tmp) / f"llamafactory-{lf_version}").mkdir(exist_ok=True)  # an sdist with neither (0.9.3)
        os.replace(Path(tmp) / f"llamafactory-{lf_version}", root)
    return root


@dataclass
class Record:
    mode: str
    lfkit_active: bool | None
    outcomes: dict[str, str]
    calls: dict[str, list]
    seconds: float
    tail: str = ""

    def passed(self) -> set[str]:
        return {t for t, o in self.outcomes.items() if o in ("passed", "xpassed")}


@dataclass
class Comparison:
    off: Record
    on: Record
    lost: list[str] = field(default_factory=list)  # passed off, not on
    outcome_changes: list[str] = field(default_factory=list)  # any other outcome difference
    arg_changes: list[str] = field(default_factory=list)  # the parser saw other arguments


def run_mode(mode: str, lf_root: Path, work: Path, env: dict[str, str]) -> Record:
    import time

    tests = work / f"tests-{mode}"
    if tests.exists():
        shutil.rmtree(tests)
    shutil.copytree(lf_root / "tests", tests)
    # An empty ini at the suite's root: LLaMA-Factory's pyproject options and lfkit's stay out.
    (work / f"pytest-{mode}.ini").write_text("[pytest]\n")
    report = work / f"report-{mode}.json"
    report.unlink(missing_ok=True)
    cwd = work / f"cwd-{mode}"
    if cwd.exists():
        shutil.rmtree(cwd)
    cwd.mkdir()
    (cwd / "llamafactory").symlink_to(work / "standins" / "llamafactory", target_is_directory=True)
    run_env = {
        **env,
        "LFSUITE_REPORT": str(report),
        "PYTHONPATH": str(HERE),
        "HF_HOME": str(work / "standins" / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / f"datasets-cache-{mode}"),
        "CUDA_VISIBLE_DEVICES": "",
        "DISABLE_VERSION_CHECK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "WANDB_DISABLED": "true",
    }
    if mode == "off":
        run_env["LFKIT_AUTOLOAD"] = "0"
    else:
        run_env.pop("LFKIT_AUTOLOAD", None)
    argv = [sys.executable, "-m", "pytest", str(tests), "-c", str(work / f"pytest-{mode}.ini"),
            f"--rootdir={work}", "-p", "lfsuite_probe", "-p", "no:cacheprovider", "-q", "-rN"]  # fmt: skip
    began = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=1500)
    seconds = time.monotonic() - began
    if not report.is_file():
        raise RuntimeError(
            f"LLaMA-Factory's suite ({mode}) left no report:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    data = json.loads(report.read_text(encoding="utf-8"))
    outcomes = {k.replace(f"tests-{mode}/", "tests/"): v for k, v in data["outcomes"].items()}
    calls = {k.replace(f"tests-{mode}/", "tests/"): v for k, v in data["calls"].items()}
    return Record(mode, data["lfkit_active"], outcomes, calls, seconds, result.stdout[-2000:])


def compare(off: Record, on: Record) -> Comparison:
    found = Comparison(off, on)
    for test in sorted(set(off.outcomes) | set(on.outcomes)):
        before, after = off.outcomes.get(test), on.outcomes.get(test)
        if before in ("passed", "xpassed") and after not in ("passed", "xpassed"):
            found.lost.append(f"{test}: {before} -> {after}")
        elif before != after:
            found.outcome_changes.append(f"{test}: {before} -> {after}")
    for test in sorted(set(off.calls) | set(on.calls)):
        a, b = off.calls.get(test, []), on.calls.get(test, [])
        if len(a) != len(b):
            found.arg_changes.append(f"{test}: {len(a)} parser calls off, {len(b)} on")
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x == y:
                continue
            xa, ya = x["args"], y["args"]
            if isinstance(xa, dict) and isinstance(ya, dict):
                keys = sorted(k for k in set(xa) | set(ya) if xa.get(k) != ya.get(k))
                changes = ", ".join(f"{k}: {xa.get(k)!r} -> {ya.get(k)!r}" for k in keys)
            else:
                changes = f"{xa!r} -> {ya!r}"
            found.arg_changes.append(f"{test} (call {i + 1}): {changes}")
    return found


def run_both(work: Path, cache: Path, env: dict[str, str]) -> Comparison:
    from standins import build

    lf_root = sdist(cache)
    build(work / "standins", lf_root / "data")
    # Two pytest processes side by side: each is mostly single-threaded Python.
    with ThreadPoolExecutor(2) as pool:
        off = pool.submit(run_mode, "off", lf_root, work, env)
        on = pool.submit(run_mode, "on", lf_root, work, env)
        return compare(off.result(), on.result())


def summary(found: Comparison) -> str:
    def counts(r: Record) -> str:
        by: dict[str, int] = {}
        for outcome in r.outcomes.values():
            by[outcome] = by.get(outcome, 0) + 1
        return ", ".join(f"{n} {o}" for o, n in sorted(by.items())) + f" in {r.seconds:.0f} s"

    calls = sum(len(v) for v in found.on.calls.values())
    lines = [
        f"lfkit off: {counts(found.off)}",
        f"lfkit on:  {counts(found.on)}",
        f"parser calls: {sum(len(v) for v in found.off.calls.values())} off, {calls} on",
        f"passed off but not on: {len(found.lost)}",
        f"other outcome differences: {len(found.outcome_changes)}",
        f"argument differences: {len(found.arg_changes)}",
    ]
    lines += [f"  {line}" for line in found.lost + found.outcome_changes + found.arg_changes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="lfsuite-"))
    result = run_both(work, work / "cache", dict(os.environ))
    print(summary(result))
    print("OFF tail:", result.off.tail[-800:])
    json.dump({"off": result.off.outcomes, "on": result.on.outcomes}, open(work / "outcomes.json", "w"), indent=1)
