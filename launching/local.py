"""The local back end: each step of the plan in its own process on this machine, by the runner.

A train step with ``nproc_per_node`` / ``nnodes`` / ``deepspeed`` starts its workers
through LLaMA-Factory's own torchrun launcher (``step_launch``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError
from lfkit.recipes.runner import Runner


class LocalBackend:
    name = "local"
    batch = False
    # Set by backends.choose: every back end's guard, so a folder whose batch job runs is refused here too.
    folder_guard = None

    @classmethod
    def from_command_line(cls, assignments: list[str], extra: list[str] | None) -> tuple[LocalBackend, list[str]]:
        if extra:
            raise UsageError("--sbatch goes with --slurm")
        return cls(), assignments

    def ready(self) -> None:
        pass

    @property
    def devices_per_node(self) -> int | None:
        return None

    def check(self, plan) -> dict[str, Any]:
        return {}

    def run(self, plan, overwrite: bool, echo: Callable[[str], None], **runner_options: Any) -> list[dict]:
        return Runner(plan, echo=echo, guard=self.folder_guard, **runner_options).run(overwrite=overwrite)

    @staticmethod
    def guard(folder: Path, record: dict) -> None:
        """A local run holds its folder by the folder's lock, which the runner takes; nothing to add."""

    def state(self, folder: Path) -> str | None:
        return None
