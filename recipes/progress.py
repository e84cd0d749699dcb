"""One line per step while it runs, read from what the step writes into its folder, not from its stdout.

- train: LLaMA-Factory's ``trainer_log.jsonl`` (current / total steps, loss, elapsed and
  remaining time);
- eval: lfkit's ``.lfkit-progress.json`` (samples done / total);
- the others: the time so far.

On a terminal the line is redrawn in place; elsewhere (a pipe, CI, a Slurm output file,
nohup) plain lines only: one when a step starts, one at most every 10 %, one when it ends.
The step's whole output is in ``STEP/output.log``; ``-v`` streams it instead.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from lfkit.evaluation.runner import EVAL_PROGRESS
from lfkit.state_files import read_tail_bounded

TRAINER_LOG = "trainer_log.jsonl"


def _last_json_line(path: Path) -> dict[str, Any] | None:
    try:
        lines = read_tail_bounded(path, 4096).decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):
            return entry
    return None


def train_status(folder: Path) -> dict[str, Any] | None:
    """{done, total, loss, eta} from trainer_log.jsonl, or None before its first line."""
    entry = _last_json_line(folder / TRAINER_LOG)
    if not entry or not entry.get("total_steps"):
        return None
    done, elapsed = int(entry.get("current_steps") or 0), _seconds(entry.get("elapsed_time"))
    return {
        "done": done,
        "total": int(entry["total_steps"]),
        "loss": entry.get("loss"),
        "speed": done / elapsed if elapsed else None,
        "eta": entry.get("remaining_time"),
        "unit": "steps",
    }


def _seconds(clock) -> float | None:
    """LLaMA-Factory's '0:01:30' (or '1 day, 0:01:30') in seconds."""
    try:
        days, _, rest = str(clock).rpartition(" day")
        parts = [float(p) for p in rest.split(",")[-1].strip().split(":")]
        return sum(v * 60**i for i, v in enumerate(reversed(parts))) + (int(days or 0) * 86400 if days else 0)
    except ValueError:
        return None


def eval_status(folder: Path) -> dict[str, Any] | None:
    try:
        entry = json.loads((folder / EVAL_PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"done": int(entry.get("done") or 0), "total": int(entry.get("total") or 0), "unit": "samples"}


def describe(status: dict[str, Any] | None) -> str:
    if not status or not status.get("total"):
        return ""
    text = f"{status['done']}/{status['total']} {status['unit']}"
    if status.get("loss") is not None:
        text += f", loss {status['loss']:.4g}"
    if status.get("speed"):
        text += f", {status['speed']:.2f} steps/s"
    if status.get("eta"):
        text += f", {status['eta']} left"
    return text


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class StepProgress:
    """The live line of one step."""

    def __init__(self, name: str, command: str, folder: Path, out: TextIO | None = None) -> None:
        self.name, self.command, self.folder = name, command, folder
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.began = time.monotonic()
        self.tenth = 0  # the last 10 % mark printed (plain output)
        self.reader = {"train": train_status, "eval": eval_status}.get(command)

    def _write(self, text: str, final: bool = False) -> None:
        try:
            if self.tty:
                width = shutil.get_terminal_size((100, 24)).columns - 1
                self.out.write("\r\x1b[2K" + text[:width] + ("\n" if final else ""))
            else:
                self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the run

    def start(self) -> None:
        self._write(f"lfkit: step {self.name} ({self.command}) -> {self.folder}", final=True)

    def poll(self) -> None:
        status = self.reader(self.folder) if self.reader else None
        detail = describe(status)
        if self.tty:
            self._write(
                f"  {self.name}: running {_clock(time.monotonic() - self.began)}" + (f"  {detail}" if detail else "")
            )
            return
        if status and status.get("total"):
            tenth = int(10 * status["done"] / status["total"])
            if tenth > self.tenth and tenth < 10:
                self.tenth = tenth
                self._write(f"  {self.name}: {round(100 * status['done'] / status['total'])}% ({detail})")

    def finish(self, status: str, seconds: float) -> None:
        state = self.reader(self.folder) if self.reader else None
        detail = describe({**state, "eta": None, "speed": None}) if state else ""
        self._write(f"  {self.name}: {status} in {_clock(seconds)}" + (f" ({detail})" if detail else ""), final=True)
