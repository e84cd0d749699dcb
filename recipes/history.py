"""Past runs: the run folders under a root, and those recorded in $LFKIT_HOME, at a glance.

Every ``lfkit run`` records its run folder in ``$LFKIT_HOME/runs.json`` (locked, atomic;
a problem there never stops a run). A run folder holds a ``run.json``: a multi-step
run's own, or its single step's.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.locking import locked
from lfkit.paths import lfkit_home
from lfkit.state_files import read_json_bounded

from .run_folder import RUN_FILE, read_record, record_problem, settle
from .summary import key_metric

STATUSES = ("finished", "failed", "interrupted", "cancelled", "running", "submitted")


def _registry() -> Path:
    return lfkit_home() / "runs.json"


def remembered() -> list[Path]:
    try:
        data = read_json_bounded(_registry())  # a FIFO or /dev/zero there: no runs remembered, no hang
    except (OSError, ValueError):
        return []
    return [Path(p) for p in data if isinstance(p, str)] if isinstance(data, list) else []


def remember(folder: Path) -> None:
    registry = _registry()
    try:
        registry.parent.mkdir(parents=True, exist_ok=True)
        with locked(registry.with_name(registry.name + ".lock")):
            known = [str(p) for p in remembered()]
            if str(folder) not in known:
                write_json(registry, [*known, str(folder)])
    except OSError:
        pass  # an unwritable LFKIT_HOME costs only this list


def is_run_folder(folder: Path) -> bool:
    """A run's folder: its run.json names a recipe, or cannot be read at all (listed as unreadable,
    never skipped); a step folder of a multi-step run is not a run of its own."""
    record = read_record(folder)
    if record is None:
        return record_problem(folder) is not None and "recipe" not in (read_record(folder.parent) or {})
    if "recipe" not in record:
        return False
    return "step" not in record or read_record(folder.parent) is None


def find_runs(root: Path, depth: int = 2) -> list[Path]:
    found: list[Path] = []
    if not root.is_dir():
        return found
    frontier = [root]
    for _ in range(depth + 1):
        next_frontier = []
        for folder in frontier:
            if (folder / RUN_FILE).is_file() and is_run_folder(folder):
                found.append(folder)
                continue
            try:
                next_frontier += [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            except OSError:
                continue
        frontier = next_frontier
    return found


def _time(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        found = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    # a time written without its zone (by hand, by an older tool) is taken as this machine's local time
    return found if found.tzinfo else found.astimezone()


# Where a run stands, as `lfkit status` says it (the launch back ends' judgement of a batch job).
StatusOf = Callable[[Path], str]


def describe(folder: Path, status_of: StatusOf | None = None) -> dict[str, Any]:
    """recipe, status, started, seconds, metric and folder of one run."""
    # status_of settles the record itself (a run whose process is gone says so, in run.json too)
    status = status_of(folder) if status_of is not None else None
    record = (read_record(folder) if status_of is not None else settle(folder)) or {}
    if status is None:
        status = record.get("status", "?")
    started, ended = _time(record.get("started")), _time(record.get("finished") or record.get("ended"))
    seconds = record.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        seconds = None
    if seconds is None and started and ended:
        seconds = round((ended - started).total_seconds(), 1)
    recipe = record.get("recipe")
    return {
        "recipe": recipe if isinstance(recipe, str) else None,
        "status": status if isinstance(status, str) else "?",
        "started": started.isoformat(timespec="seconds") if started else None,
        "seconds": seconds,
        "metric": key_metric(folder),
        "folder": str(folder),
    }


def unreadable(folder: Path, problem: str) -> dict[str, Any]:
    """The one line a run whose record cannot be read gets in a listing."""
    return {"recipe": None, "status": problem, "started": None, "seconds": None, "metric": "", "folder": str(folder)}


def _described(folder: Path, status_of: StatusOf | None) -> dict[str, Any]:
    problem = record_problem(folder)
    if problem is not None:
        return unreadable(folder, problem)
    try:
        return describe(folder, status_of)
    except Exception as exc:  # noqa: BLE001 - one bad record is one line, never the end of the listing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return unreadable(folder, f"unreadable records ({reason[:80]})")  # run.json read; something beside it not


def all_runs(root: Path, status_of: StatusOf | None = None) -> list[dict[str, Any]]:
    folders = {f.resolve() for f in find_runs(root)}
    folders |= {f.resolve() for f in remembered() if f.is_dir() and is_run_folder(f)}
    runs = [_described(folder, status_of) for folder in folders]

    def when(run: dict[str, Any]) -> float:
        started = _time(run["started"])
        return started.timestamp() if started else 0.0

    return sorted(runs, key=when, reverse=True)
