"""`lfkit run` and `lfkit recipes [show|export]`."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from ..atomic import write_text
from ..errors import UsageError
from .app import JSON_OPTION, app, manager
from .output import console, print_json, table
from .recipe_args import (
    ASSIGNMENTS,
    CONFIG,
    NO_PREFLIGHT,
    SBATCH_LINES,
    SLURM,
    choose_backend,
    get_recipe,
    plan_for,
)

recipes_app = typer.Typer(
    help="List, show and export recipes (LLaMA-Factory train / export / chat runs by name).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@recipes_app.callback()
def recipes_list(ctx: typer.Context, as_json: bool = JSON_OPTION):
    """List recipes: name, steps, required parameters, the plugin that brings each."""
    if ctx.invoked_subcommand is not None:
        return
    entries = manager().recipes.entries()
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
    import yaml

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
    beside = None
    if chosen.args.get("deepspeed"):
        # The DeepSpeed config travels with the YAML, so the pair runs anywhere under llamafactory-cli.
        beside = output.with_name(f"{output.stem}.deepspeed.json")
        if beside.exists() and not force:
            raise UsageError(f"{beside} exists; pass --force to replace it")
        text = Path(chosen.args["deepspeed"]).read_text(encoding="utf-8")
        chosen.args["deepspeed"] = str(beside.resolve())
        write_text(beside, text)
    write_text(output, export_yaml(chosen, plan.recipe))
    also = f" with {beside}" if beside else ""
    console.print(
        f"wrote {output}{also}  (llamafactory-cli {chosen.command} {shlex.quote(str(output))})", highlight=False
    )


@app.command("run")
def run_recipe(
    name: str = typer.Argument(..., help="Recipe name (see `lfkit recipes`)."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    config: Optional[Path] = CONFIG,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in output_dir."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
    slurm: bool = SLURM,
    sbatch_lines: Optional[list[str]] = SBATCH_LINES,
    no_preflight: bool = NO_PREFLIGHT,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Stream each step's whole output (it is always in STEP/output.log)."
    ),
):
    """Run a recipe by name: validate, check that each train step fits the card, run each step (or a Slurm job)."""
    from lfkit.recipes.failures import run_failures
    from lfkit.recipes.run_folder import judge_output_dir, plan_dict, refuse_busy, refuse_finished

    from .plan import preflight, refuse_real_work, refuse_unfit, show_on_stderr, step_plans

    backend, assignments = choose_backend(slurm, assignments, sbatch_lines)
    if not dry_run:
        backend.ready()
    plan = plan_for(
        name,
        assignments,
        config,
        lambda out: None if dry_run else refuse_finished(out, overwrite),
        backend.devices_per_node,
    )
    devices = backend.devices_per_node
    if dry_run:  # the plan (and with --slurm the job script); nothing runs, nothing is submitted
        judge_output_dir(plan, overwrite, backend.folder_guard)  # what the run would refuse, refused here
        refuse_busy(plan.output_dir)  # the run's lock, asked without taking it
        memory, plans = {}, []
        if any(s.command == "train" for s in plan.steps):
            plans = step_plans(plan, devices)
            show_on_stderr(plans)
            memory = {p.step: p.as_dict() for p in plans}
        launch = backend.check(plan)
        print_json(
            {
                **launch,
                "recipe": plan.recipe.name,
                "output_dir": str(plan.output_dir) if plan.output_dir else None,
                "steps": [
                    {"name": step_name, **step, **({"memory": memory[step_name]} if step_name in memory else {})}
                    for step_name, step in plan_dict(plan).items()
                ],
            }
        )
        if not no_preflight:
            refuse_unfit(plans)  # the preflight's refusal, after the plan it comes from
        return
    refuse_real_work("the run")
    plans = preflight(plan, devices, no_preflight)
    if backend.batch:
        submitted(plan, backend, backend.run(plan, overwrite, echo=_echo))
        return
    with run_failures():
        records = backend.run(
            plan, overwrite, echo=_echo, memory_plans={p.step: p.as_dict() for p in plans}, verbose=verbose
        )
    show_summary(plan, records)


def _echo(line: str) -> None:
    # A log line stays one line (paths are long; logs and Slurm output files are read with grep).
    console.print(line, highlight=False, soft_wrap=True)


def show_summary(plan, records) -> None:
    """Each step's status, time and key result, then the commands a user would likely run next."""
    from lfkit.recipes.summary import key_result, next_commands

    table(
        f"{plan.recipe.name}: done" + (f" -> {plan.output_dir}" if plan.output_dir else ""),
        ["step", "status", "time", "result"],
        [
            (s.name, r.get("status"), f"{r.get('seconds') or 0:.0f}s", key_result(s.command, s.dir, r))
            for s, r in zip(plan.steps, records, strict=True)
        ],
    )
    for command in next_commands(plan, records):
        console.print(f"next: {command}", highlight=False, soft_wrap=True)


def submitted(plan, backend, job_id: str) -> None:
    """What a user needs after a batch submission: the job and how to follow it."""
    tokenized = [s.args.get("tokenized_path") for s in plan.steps if s.command == "train"]
    nodes = getattr(backend.options, "nodes", 1)
    if nodes > 1 and not any(t and Path(t).exists() for t in tokenized):
        console.print(
            "lfkit: hint: every node tokenizes the data before the workers meet; for a large dataset tokenize "
            "once (a one-node run with tokenized_path=DIR) and pass tokenized_path=DIR here",
            highlight=False,
        )
    folder = shlex.quote(str(plan.output_dir))  # pasted into a shell as it is printed
    console.print(
        f"lfkit: submitted job {job_id} ({plan.recipe.name}, {nodes} node(s)) -> {plan.output_dir}\n"
        f"       follow it: lfkit status {folder}  |  lfkit logs -f {folder}",
        highlight=False,
        soft_wrap=True,
    )
