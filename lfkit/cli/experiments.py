"""`lfkit eval`, `lfkit sweep` and `lfkit compare`: measuring models and A/B-testing hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .app import app
from .output import console, fail
from .recipe_args import (
    ASSIGNMENTS,
    CONFIG,
    NO_PREFLIGHT,
    SBATCH_LINES,
    SLURM,
    choose_backend,
    get_recipe,
    quiet_resolution,
)
from .recipes import run_recipe

EVAL_OPTION = typer.Option(..., "--eval", help="The test split every variant is measured on (a dataset name).")
METRIC_OPTION = typer.Option("exact_match", "--metric", help="Rank by exact_match, precision, recall or f1.")
METRICS = ("exact_match", "precision", "recall", "f1")


@app.command("eval")
def evaluate(
    assignments: Optional[list[str]] = ASSIGNMENTS,
    config: Optional[Path] = CONFIG,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace finished results in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Stream the step's whole output (it is always in STEP/output.log)."
    ),
):
    """Measure a model on a test split: model=..., optionally adapter=, dataset=, output_dir= (recipe eval-telecom)."""
    # every option by value: a typer Option object left as a default is truthy
    run_recipe(
        "eval-telecom",
        assignments,
        config,
        overwrite,
        dry_run=dry_run,
        slurm=False,
        sbatch_lines=None,
        no_preflight=False,
        verbose=verbose,
    )


def _preflight_every_variant(sweep, plans: list, devices: int | None, skip: bool) -> None:
    """Every variant's train steps against the card before the first variant starts: one line names
    each variant that will not fit (exit 2), so a sweep never stops half-way for want of memory."""
    from .plan import preflight

    refused = []
    for name, plan in zip(sweep.names, plans, strict=True):
        try:
            preflight(plan, devices, skip)
        except UsageError as exc:
            refused.append(f"variant {name}: {exc}")
    if refused:
        raise UsageError("; ".join(refused))


def _sweep(recipe_name, grid, assignments, config, dataset, output_dir, metric, overwrite, slurm, sbatch_lines,
           no_preflight=False):  # fmt: skip
    from lfkit.recipes.failures import run_failures
    from lfkit.recipes.resolve import read_config
    from lfkit.recipes.sweep import Sweep, VariantsFailed, default_folder

    from .plan import refuse_real_work

    if metric not in METRICS:
        raise UsageError(f"--metric {metric}: one of {', '.join(METRICS)}")
    backend, assignments = choose_backend(slurm, assignments, sbatch_lines)
    backend.ready()
    recipe = get_recipe(recipe_name).value
    given = read_config(config)
    key = {"grid": grid, "params": sorted(assignments or []), "config": given, "eval": dataset}
    out = (output_dir or default_folder(recipe_name, key)).resolve()
    sweep = Sweep(recipe, grid, assignments or [], given, dataset, out, metric)
    sweep.check_folder(overwrite)
    with quiet_resolution():
        plans = sweep.plans(backend.devices_per_node)
    refuse_real_work(f"every {'model' if 'model' in grid else 'variant'}", dry_run=False)  # sweeps have none
    _preflight_every_variant(sweep, plans, backend.devices_per_node, no_preflight)
    sweep.clear_overwritten()
    console.print(f"lfkit: {len(plans)} variants of {recipe_name} -> {out}", highlight=False)
    echo = lambda line: console.print(line, highlight=False)  # noqa: E731
    try:
        with run_failures():
            sweep.submit(plans, backend, echo) if backend.batch else sweep.run(plans, backend, echo)
    except VariantsFailed as exc:
        fail(str(exc), code=1)


@app.command("sweep")
def sweep_command(
    recipe: str = typer.Argument(..., help="The recipe every variant runs (see `lfkit recipes`)."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    grid: list[str] = typer.Option(..., "--grid", help="key=v1,v2,... (repeat for a grid: every combination runs)."),
    dataset: str = EVAL_OPTION,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="The sweep folder."),
    metric: str = METRIC_OPTION,
    config: Optional[Path] = CONFIG,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished sweep."),
    slurm: bool = SLURM,
    sbatch_lines: Optional[list[str]] = SBATCH_LINES,
    no_preflight: bool = NO_PREFLIGHT,
):
    """A/B-test hyperparameters: every variant with the same data and seed, each evaluated and ranked.

    Every variant's memory plan is checked before the first starts. With --slurm, one job per variant;
    the same command run again after the jobs end collects the table."""
    from lfkit.recipes.sweep import parse_grid

    grid_values = parse_grid(grid)
    _sweep(recipe, grid_values, assignments, config, dataset, output_dir, metric, overwrite, slurm, sbatch_lines,
           no_preflight)  # fmt: skip


@app.command("compare")
def compare_command(
    recipe: str = typer.Argument(..., help="The recipe every model runs (see `lfkit recipes`)."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    dataset: str = EVAL_OPTION,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="The comparison folder."),
    metric: str = METRIC_OPTION,
    config: Optional[Path] = CONFIG,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished comparison."),
    slurm: bool = SLURM,
    sbatch_lines: Optional[list[str]] = SBATCH_LINES,
    no_preflight: bool = NO_PREFLIGHT,
):
    """Compare models: the same recipe, data and hyperparameters on model=a,b,c, each evaluated and ranked.

    Every model's memory plan is checked before the first starts."""
    rest, models = [], None
    for item in assignments or []:
        if item.startswith("model="):
            models = [m.strip() for m in item[len("model=") :].split(",") if m.strip()]
        else:
            rest.append(item)
    if not models or len(models) < 2:
        raise UsageError("compare needs model=a,b[,c...] with two or more models")
    _sweep(recipe, {"model": models}, rest, config, dataset, output_dir, metric, overwrite, slurm, sbatch_lines,
           no_preflight)  # fmt: skip
