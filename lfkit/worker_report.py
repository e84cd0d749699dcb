"""What a process leaves behind of lfkit: its patch statuses and argument changes.

- A torchrun worker of an lfkit step: the step process hands its workers a folder through
  the environment; a worker (RANK is set) leaves its report there as it exits, and
  ``lfkit.launching.workers`` collects them for the step's run.json.
- A training LlamaBoard (``llamafactory-cli webui``) started: LlamaBoard names its output
  folder in ``LLAMABOARD_WORKDIR``; each of its processes leaves ``lfkit-patches.json``
  there (``lfkit-patches-rank<N>.json`` for torchrun workers) as it exits, so a web UI user
  can see which fixes were active, as run.json shows for ``lfkit run``.

Kept cheap: activation calls ``arm`` only where one of those variables is set.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

REPORTS_ENV = "LFKIT_WORKER_REPORTS"
PREFIX = ".lfkit-patches-rank"
# Set by LlamaBoard for the training process it starts (LLaMA-Factory webui/runner.py).
LLAMABOARD_ENV, LLAMABOARD_ON = "LLAMABOARD_WORKDIR", "LLAMABOARD_ENABLED"
UI_REPORT = "lfkit-patches"


def patch_statuses() -> list[dict]:
    from lfkit.plugin_manager import get_manager

    return [state.as_dict() for state in get_manager().patches.states.values()]


def arm() -> None:
    """Leave a report at exit where this process is one of the two kinds above; nothing otherwise."""
    folder, rank = os.environ.get(REPORTS_ENV), os.environ.get("RANK")
    ranked = rank is not None and rank.isdigit()
    if folder and ranked:
        atexit.register(_leave_report, Path(folder) / f"{PREFIX}{rank}.json", int(rank))
    elif os.environ.get(LLAMABOARD_ENV) and os.environ.get(LLAMABOARD_ON):
        name = f"{UI_REPORT}-rank{rank}.json" if ranked else f"{UI_REPORT}.json"
        atexit.register(_leave_report, Path(os.environ[LLAMABOARD_ENV]) / name, int(rank) if ranked else None)


def _leave_report(path: Path, rank: int | None) -> None:
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
        if path.parent.is_dir():  # a run that ended before it made its folder leaves nothing
            write_json(path, report)
    except Exception:  # noqa: BLE001 - a report must never change how the worker exits
        pass
