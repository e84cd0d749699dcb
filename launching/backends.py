"""How a resolved plan runs: the launch back ends, behind one small interface.

``lfkit.recipes`` resolves and checks a plan and owns the run folder; a back end
runs the plan: here, in local processes (``local``: one process per step, torchrun
workers where a step asks for them), or as a batch job of a scheduler (``slurm``).
The command picks one by name; the runner and the run folder never know which.

A new back end (another scheduler, a cluster API) is one module with a class that
has these members, added to ``_classes`` below, plus its tests on a real instance
of that system. Nothing outside ``launching/`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

Echo = Callable[[str], None]


class Backend(Protocol):
    name: str
    # True: run() queues the plan and returns a job id at once; the run goes on elsewhere.
    batch: bool
    # What run() checks a folder's record with before writing into it (set by ``choose``: every back end's guard).
    folder_guard: Callable[[Path, dict], None] | None

    @classmethod
    def from_command_line(cls, assignments: list[str], extra: list[str] | None) -> tuple[Backend, list[str]]:
        """The back end with its request taken out of the command line (``partition=``, ``--sbatch``);
        the rest are the recipe's key=value."""

    def ready(self) -> None:
        """Refuse at once (UsageError) where this back end cannot be used, before a plan is resolved."""

    @property
    def devices_per_node(self) -> int | None:
        """The devices each node of the run will see (None: this machine's)."""

    def check(self, plan) -> dict[str, Any]:
        """Everything that can be refused before anything is written; what ``--dry-run`` shows of the launch."""

    def run(self, plan, overwrite: bool, echo: Echo, **runner_options: Any) -> Any:
        """Run (or queue) the plan: the step records of a local run, the job id of a batch run."""

    @staticmethod
    def guard(folder: Path, record: dict) -> None:
        """Refuse (UsageError) while a job of this back end, other than this process, holds ``folder``."""

    def state(self, folder: Path) -> str | None:
        """pending | running | finished | failed | cancelled of a run this back end queued; None otherwise."""


def _classes() -> dict[str, type]:
    from .local import LocalBackend
    from .slurm.backend import SlurmBackend

    return {"local": LocalBackend, "slurm": SlurmBackend}


def choose(name: str, assignments: list[str] | None, extra: list[str] | None = None) -> tuple[Backend, list[str]]:
    """The back end ``name`` and the recipe's own key=value."""
    backend, rest = _classes()[name].from_command_line(list(assignments or []), extra)
    backend.folder_guard = guard_all
    return backend, rest


def guard_all(folder: Path, record: dict) -> None:
    """Every back end's guard: a folder whose queued or running job is not this process is refused."""
    for cls in _classes().values():
        cls.guard(folder, record)


def run_status(folder: Path) -> str:
    """Where the run in ``folder`` stands: the one answer `lfkit status`, `runs` and `show` give
    (a batch job's from its scheduler, a local run's from its record and lock; run.json mended on
    the way where it was left saying "running")."""
    from lfkit.errors import UsageError

    from .slurm.jobs import status

    try:
        return status(folder)["status"]
    except UsageError:
        return "?"
