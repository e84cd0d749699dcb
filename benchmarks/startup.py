"""Interpreter start-up cost of lfkit's .pth activation, measured side by side.

Runs `python -c pass` alternately with LFKIT_AUTOLOAD=0 and with activation on,
in the same environment and the same run, and prints the medians and their ratio.
It does so for the environment it runs in (the editable dev install) and for a
throw-away venv holding a regular wheel install of this checkout (lfkit alone:
start-up imports nothing else). The goal (issue 2): activation costs at most 1.3x
a start without it.

    python benchmarks/startup.py [--rounds 60] [--max-ratio 1.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _once(python: str, env: dict[str, str], code: str) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", code], env=env, check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def _regular_install(workdir: Path) -> str:
    """A venv with lfkit installed from a wheel of this checkout (no dependencies)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", workdir / "wheel", REPO], check=True)
    wheel = next((workdir / "wheel").glob("lfkit-*.whl"))
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    return python


def measure_torch(python: str, rounds: int) -> float:
    """`python -c "import torch"`, lfkit off and on, interleaved: what activation adds to a real import."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LFKIT_")}
    variants = {"off (LFKIT_AUTOLOAD=0)": {**base, "LFKIT_AUTOLOAD": "0"}, "on (lfkit-autoload.pth)": base}
    times: dict[str, list[float]] = {name: [] for name in variants}
    _once(python, base, "import torch")
    for _ in range(rounds):
        for name, env in variants.items():
            times[name].append(_once(python, env, "import torch"))
    print(f"{rounds} interleaved rounds of `python -c 'import torch'`")
    for name, samples in times.items():
        print(f"  {name:26s} median {statistics.median(samples) * 1000:7.1f} ms")
    off, on = (statistics.median(samples) for samples in times.values())
    print(f"  ratio on/off: {on / off:.3f}  (goal <= 1.05)")
    return on / off


CLI_COMMANDS = (["--help"], ["patches"], ["datasets"], ["recipes"], ["models"], ["runs"], ["doctor"])


def measure_cli(rounds: int) -> None:
    """Median wall time of the everyday `lfkit` commands (goal: 0.35 s, doctor 1.5 s)."""
    lfkit = str(Path(sys.executable).parent / "lfkit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFKIT_")}
    print(f"`lfkit` commands, median of {rounds}")
    for argv in CLI_COMMANDS:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            subprocess.run([lfkit, *argv], env=env, capture_output=True, cwd=tempfile.gettempdir())
            samples.append(time.perf_counter() - started)
        goal = 1.5 if argv == ["doctor"] else 0.35
        print(f"  lfkit {' '.join(argv):22s} {statistics.median(samples):6.2f} s  (goal <= {goal})")


def measure(label: str, python: str, rounds: int) -> float:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LFKIT_")}
    variants = {"off (LFKIT_AUTOLOAD=0)": {**base, "LFKIT_AUTOLOAD": "0"}, "on (lfkit-autoload.pth)": base}
    # Warm the file cache, and check that each variant is what it says.
    _once(python, variants["on (lfkit-autoload.pth)"], "import sys; assert 'lfkit' in sys.modules")
    _once(python, variants["off (LFKIT_AUTOLOAD=0)"], "import sys; assert 'lfkit' not in sys.modules")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, env in variants.items():
            times[name].append(_once(python, env, "pass"))
    print(f"{label}: {rounds} interleaved rounds of `python -c pass`")
    for name, samples in times.items():
        print(
            f"  {name:26s} median {statistics.median(samples) * 1000:7.2f} ms   "
            f"min {min(samples) * 1000:7.2f} ms   max {max(samples) * 1000:7.2f} ms"
        )
    off, on = (statistics.median(samples) for samples in times.values())
    print(f"  ratio on/off: {on / off:.3f}  (goal <= 1.3)")
    return on / off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--max-ratio", type=float, default=None, help="exit 1 when a median ratio exceeds this")
    opts = parser.parse_args()

    print(f"python {sys.version.split()[0]}")
    ratios = [measure("editable install (this environment)", sys.executable, opts.rounds)]
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-") as workdir:
        ratios.append(measure("regular wheel install", _regular_install(Path(workdir)), opts.rounds))
    measure_torch(sys.executable, max(opts.rounds // 6, 5))
    measure_cli(5)
    if opts.max_ratio is not None and max(ratios) > opts.max_ratio:
        print(f"FAIL: ratio {max(ratios):.3f} > {opts.max_ratio}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
