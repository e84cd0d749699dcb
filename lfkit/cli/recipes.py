"""`lfkit run` and `lfkit recipes [show|export]`."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from ..atomic import write_text
from ..errors import UsageError
from .main import JSON_OPTION, _manager, app
from .output import console, error_line, print_json, table

recipes_app = typer.Typer(
    help="List, show and export recipes (LLaMA-Factory train / export / chat runs by name).",
    invoke_without_command=True,
    no_args_is_help=False,
)

ASSIGNMENTS = typer.Argument(None, help="Parameters and LLaMA-Factory keys as key=value (STEP.key=value for one step).")
CONFIG = typer.Option(None, "--config", "-c", help="A YAML file of key: value, applied before the key=value arguments.")


def get_recipe(name: str):
    entry = _manager().recipes.get(name)
    if entry is None:
        names = _manager().recipes.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names)}"
        raise UsageError(f"unknown recipe {name!r} ({hint})")
    return entry


def plan_for(name: str, assignments: list[str] | None, config: Path | None, on_output_dir=None):
    from lfkit.recipes.resolve import parse_assignments, read_config, resolve

    recipe = get_recipe(name).value
    with quiet_resolution():
        return resolve(recipe, parse_assignments(assignments or []), read_config(config), on_output_dir)


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
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if previous is None:
            os.environ.pop("LLAMAFACTORY_VERBOSITY", None)


@contextlib.contextmanager
def run_failures():
    """A failed step: the lines of its log that name the error and where the whole log is (exit 1).
    A stopped run: one line that says how to continue it (exit 130)."""
    from lfkit.recipes.runner import RunInterrupted, StepFailed

    try:
        yield
    except StepFailed as exc:
        error_line(str(exc))
        for line in exc.lines:
            sys.stderr.write(f"  {line}\n")
        if exc.log is not None:
            sys.stderr.write(f"  full log: {exc.log}\n")
        raise typer.Exit(1) from None
    except RunInterrupted as exc:
        sys.stderr.write(f"lfkit: interrupted: {exc}\n")
        raise typer.Exit(130) from None


@recipes_app.callback()
def recipes_list(ctx: typer.Context, as_json: bool = JSON_OPTION):
    """List recipes: name, steps, required parameters, the plugin that brings each."""
    if ctx.invoked_subcommand is not None:
        return
    entries = _manager().recipes.entries()
    if as_json:
        print_json([{**e.value.as_dict(), "plugin": e.plugin} for e in entries])
        return
    table(
        "recipes (lfkit run NAME key=value ...)",
        ["name", "steps", "requires", "description", "plugin"],
        [
            (
                e.name,
                " -> ".join(s.command for s in e.value.steps),
                ", ".join(f"{p}=" for p, spec in e.value.params.items() if spec.required),
                e.value.description,
                e.plugin,
            )
            for e in entries
        ],
    )


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Recipe name.")):
    """Print a recipe: its parameters and the LLaMA-Factory arguments of each step."""
    entry = get_recipe(name)
    recipe = entry.value
    console.print(f"[bold]{recipe.name}[/bold]: {recipe.description}  (from {entry.plugin})", highlight=False)
    table(
        "parameters",
        ["name", "required", "default", "help"],
        [(p.name, "yes" if p.required else "", p.default, p.help) for p in recipe.params.values()],
    )
    for step in recipe.steps:
        console.print(f"\n[bold]step {step.name}[/bold] ({step.command})", highlight=False)
        console.print(yaml.safe_dump(step.args, allow_unicode=True, sort_keys=False).rstrip(), highlight=False)


@recipes_app.command("export")
def recipes_export(
    name: str = typer.Argument(..., help="Recipe name."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    output: Path = typer.Option(..., "--output", "-o", help="The YAML file to write."),
    step: Optional[str] = typer.Option(None, "--step", help="Which step of a multi-step recipe."),
    config: Optional[Path] = CONFIG,
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
):
    """Write one step as a plain LLaMA-Factory YAML that `llamafactory-cli` runs as it is."""
    from lfkit.recipes.resolve import export_yaml

    if output.exists() and not force:
        raise UsageError(f"{output} exists; pass --force to replace it")
    plan = plan_for(name, assignments, config)
    steps = {s.name: s for s in plan.steps}
    if step is None and len(steps) > 1:
        raise UsageError(f"recipe {name} has steps {', '.join(steps)}; pick one with --step")
    if step is not None and step not in steps:
        raise UsageError(f"recipe {name} has no step {step!r}; its steps: {', '.join(steps)}")
    chosen = steps[step] if step else plan.steps[0]
    if chosen.command not in ("train", "export", "chat"):
        raise UsageError(f"step {chosen.name} is lfkit's {chosen.command}, not a llamafactory-cli command")
    write_text(output, export_yaml(chosen, plan.recipe))
    console.print(f"wrote {output}  (llamafactory-cli {chosen.command} {output})", highlight=False)


@app.command("run")
def run_recipe(
    name: str = typer.Argument(..., help="Recipe name (see `lfkit recipes`)."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    config: Optional[Path] = CONFIG,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
):
    """Run a recipe by name: validate everything, then each step in its own process."""
    from lfkit.recipes.runner import Runner, refuse_finished

    plan = plan_for(name, assignments, config, lambda out: None if dry_run else refuse_finished(out, overwrite))
    if dry_run:
        print_json(
            {
                "recipe": plan.recipe.name,
                "output_dir": str(plan.output_dir) if plan.output_dir else None,
                "steps": [
                    {
                        "name": s.name,
                        "command": s.command,
                        "dir": str(s.dir) if s.dir else None,
                        "args": s.args,
                        "lfkit_args": s.lfkit_args,
                        "notes": s.notes,
                        "datasets": s.datasets,
                    }
                    for s in plan.steps
                ],
            }
        )
        return
    with run_failures():
        records = Runner(plan, echo=lambda line: console.print(line, highlight=False)).run(overwrite=overwrite)
    table(
        f"{plan.recipe.name}: done" + (f" -> {plan.output_dir}" if plan.output_dir else ""),
        ["step", "command", "status", "seconds", "folder"],
        [
            (s.name, s.command, r.get("status"), r.get("seconds"), s.dir)
            for s, r in zip(plan.steps, records, strict=True)
        ],
    )
