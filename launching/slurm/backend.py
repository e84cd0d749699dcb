"""The Slurm back end: a resolved plan as one batch job (``sbatch``), followed from the login node."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfkit.errors import UsageError

from . import jobs, submit
from .options import JobOptions, split
from .script import render


class SlurmBackend:
    name = "slurm"
    batch = True

    def __init__(self, options: JobOptions) -> None:
        self.options = options

    @classmethod
    def from_command_line(cls, assignments: list[str], extra: list[str] | None) -> tuple[SlurmBackend, list[str]]:
        """The job's request (partition=, nodes=, gres=, ..., --sbatch lines) apart from the recipe's
        key=value; nproc_per_node follows the devices each node gets."""
        rest, options = split(assignments, extra)
        keys = {item.partition("=")[0].strip() for item in rest}
        if "nnodes" in keys or "node_rank" in keys:
            raise UsageError("with --slurm, give nodes=N; each node's rank comes from the allocation")
        if options.devices_per_node and "nproc_per_node" not in keys:
            rest.append(f"nproc_per_node={options.devices_per_node}")
        return cls(options), rest

    def ready(self) -> None:
        submit.sbatch_path()

    @property
    def devices_per_node(self) -> int | None:
        return self.options.devices_per_node

    def check(self, plan) -> dict[str, Any]:
        """The job script the plan would run as (checked for what cannot run in a batch job), and Slurm's
        own verdict on it (``sbatch --test-only``, which submits nothing) where sbatch is at hand; off a
        Slurm node the script is shown unchecked, and said so."""
        submit.refuse_unrunnable(plan)
        script = render(plan.output_dir, plan.recipe.name, self.options, sys.executable)
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            return {"job_script": script, "slurm_says": "not asked: no sbatch on PATH here"}
        submit.test_only(sbatch, script)
        return {"job_script": script, "slurm_says": "sbatch --test-only accepts the job"}

    def run(self, plan, overwrite: bool, echo: Callable[[str], None], **runner_options: Any) -> str:
        return submit.submit(plan, self.options, overwrite)

    @staticmethod
    def guard(folder: Path, record: dict) -> None:
        submit.guard(folder, record)

    def state(self, folder: Path) -> str | None:
        return jobs.status(folder)["status"]
