"""What the commands that run recipes share: their arguments and options, finding a recipe,
resolving its plan quietly, and choosing the launch back end."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
from pathlib import Path

import typer

from ..errors import UsageError
from .app import manager

ASSIGNMENTS = typer.Argument(
    None,
    help="Parameters and LLaMA-Factory keys as key=value (STEP.key=value for one step); with --slurm also "
    "partition= nodes= gres= cpus_per_task= time= account= qos= setup= master_port=.",
)
SLURM = typer.Option(
    False, "--slurm", help="Submit as a Slurm batch job (job.sbatch in output_dir) and return at once."
)
SBATCH_LINES = typer.Option(None, "--sbatch", help="An extra #SBATCH option for --slurm, e.g. --sbatch=--mem=64G.")
NO_PREFLIGHT = typer.Option(
    False, "--no-preflight", help="Run even when the memory plan says a train step will not fit the card."
)
CONFIG = typer.Option(None, "--config", "-c", help="A YAML file of key: value, applied before the key=value arguments.")


def get_recipe(name: str):
    entry = manager().recipes.get(name)
    if entry is None:
        names = manager().recipes.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names)}"
        raise UsageError(f"unknown recipe {name!r} ({hint})")
    return entry


def plan_for(name: str, assignments: list[str] | None, config: Path | None, on_output_dir=None, devices=None,
             runs_model_code=True):  # fmt: skip
    from lfkit.recipes.resolve import parse_assignments, read_config, resolve

    recipe = get_recipe(name).value
    given = parse_assignments(assignments or [])
    with quiet_resolution():
        return resolve(recipe, given, read_config(config), on_output_dir, devices, runs_model_code)


def choose_backend(slurm: bool, assignments: list[str] | None, sbatch_lines: list[str] | None):
    """The launch back end the command line asks for, and the recipe's own key=value."""
    from lfkit.launching.backends import choose

    return choose("slurm" if slurm else "local", assignments, sbatch_lines)


@contextlib.contextmanager
def quiet_resolution():
    """While lfkit resolves a plan in its own process.

    LLaMA-Factory logs to stdout from its first import: keep stdout for lfkit's own
    output (--dry-run JSON), and its warnings out of a one-line error. The step
    processes start after this and log as usual.
    """
    previous = os.environ.get("LLAMAFACTORY_VERBOSITY")
    if previous is None:
        os.environ["LLAMAFACTORY_VERBOSITY"] = "ERROR"
    # DeepSpeed's logger writes to the stdout it finds at import, such as "Setting accelerator to
    # CPU" on a login node without a GPU; nothing it says here concerns the plan.
    deepspeed_logger = logging.getLogger("DeepSpeed")
    was_disabled, deepspeed_logger.disabled = deepspeed_logger.disabled, True
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        deepspeed_logger.disabled = was_disabled
        if previous is None:
            os.environ.pop("LLAMAFACTORY_VERBOSITY", None)
