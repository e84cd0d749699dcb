"""Each torchrun worker's patch statuses, for the step's run.json (``workers``): collected here.

The step process hands its workers a folder through the environment; a worker (a
process that torchrun started: RANK is set) leaves its statuses there as it exits
(``lfkit.worker_report``, armed by activation), and the runner collects them when
the step ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lfkit.worker_report import PREFIX, REPORTS_ENV  # noqa: F401 - REPORTS_ENV: the variable the step sets


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
