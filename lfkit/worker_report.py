"""What a torchrun worker of an lfkit step leaves behind: its patch statuses and argument changes.

The step process hands its workers a folder through the environment; a worker (a
process that torchrun started: RANK is set) leaves its report there as it exits, and
``lfkit.launching.workers`` collects them for the step's run.json. Kept cheap:
activation calls ``arm`` in every process, and it reads two environment variables.
"""

from __future__ import annotations

import atexit
import os
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
