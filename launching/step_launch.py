"""How one step's process starts its workers, and what run.json keeps of them.

The runner starts each step in its own process; a train step with ``nproc_per_node``,
``nnodes`` or ``deepspeed`` gets the variables LLaMA-Factory's own torchrun launcher
reads (``torchrun.launcher_env``), and each worker leaves its patch statuses in the
step folder (``workers``), collected when the step ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import workers
from .torchrun import launcher_env, world_size


def step_environment(step, args: dict[str, Any], folder: Path, leader: bool = True) -> dict[str, str]:
    """The variables a train step's process needs for its workers: LLaMA-Factory's launcher
    settings and the folder each worker leaves its patch statuses in. The leader (the node that
    runs the step) first clears the reports an earlier attempt left."""
    launch = launcher_env(step.lfkit_args, args) if step.command == "train" else {}
    if leader:
        workers.clear(folder)
    return {**launch, workers.REPORTS_ENV: str(folder)}


def launch_record(step, folder: Path, env: dict[str, str], code: int) -> dict[str, Any]:
    """What run.json keeps of the launch: the torchrun settings and each worker's report."""
    launch = {k: v for k, v in env.items() if k != workers.REPORTS_ENV}
    if not world_size(launch):
        return {}
    wait = 10 if code == 0 else 0  # a failed launch leaves what it left
    return {
        "launch": {k: v for k, v in launch.items() if k != "FORCE_TORCHRUN"},
        "workers": workers.collect(folder, expected=world_size(launch), wait_seconds=wait),
    }
