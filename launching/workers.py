"""Each torchrun worker's patch statuses, for the step's run.json (``workers``).

The step process hands its workers a folder through the environment; a worker (a
process that torchrun started: RANK is set) leaves its statuses there as it exits,
and the runner collects them when the step ends. Kept cheap: activation calls
``arm`` in every process, and it reads two environment variables.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from pathlib import Path

REPORTS_ENV = "LFKIT_WORKER_REPORTS"
PREFIX = ".lfkit-patches-rank"


def patch_statuses() -> list[dict]:
    from lfkit.plugin_manager import get_manager

    return [state.as_dict() for state in get_manager().patches.states.values()]


def arm() -> None:
    folder, rank = os.environ.get(REPORTS_ENV), os.environ.get("RANK")
    if folder and rank is not None and rank.isdigit():
        atexit.register(_leave_report, Path(folder), int(rank))


def _leave_report(folder: Path, rank: int) -> None:
    try:
        from lfkit.atomic import write_json
        from lfkit.lifecycle import ARG_CHANGES

        report = {
            "rank": rank,
            "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
            "node_rank": int(os.environ.get("GROUP_RANK", "0")),
            "host": os.uname().nodename,
            "patches": patch_statuses(),
            "arg_changes": [c.as_dict() for c in ARG_CHANGES],
        }
        write_json(folder / f"{PREFIX}{rank}.json", report)
    except Exception:  # noqa: BLE001 - a report must never change how the worker exits
        pass


def clear(folder: Path) -> None:
    for path in Path(folder).glob(f"{PREFIX}*.json"):
        path.unlink(missing_ok=True)


def collect(folder: Path, expected: int = 0, wait_seconds: float = 10.0) -> list[dict]:
    """The reports left in ``folder``, by rank, then removed. Other nodes' workers may exit a moment
    after this node's: wait up to ``wait_seconds`` for ``expected`` reports."""
    deadline = time.monotonic() + wait_seconds
    while len(list(Path(folder).glob(f"{PREFIX}*.json"))) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    reports = []
    for path in Path(folder).glob(f"{PREFIX}*.json"):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        finally:
            path.unlink(missing_ok=True)
    return sorted(reports, key=lambda r: r.get("rank", 0))
