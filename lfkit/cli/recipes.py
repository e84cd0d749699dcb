"""`lfkit run` and `lfkit recipes [show|export]`."""

from __future__ import annotations

import contextlib
import difflib
import logging
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
    entry = _manager().recipes.get(name)
    if entry is None:
        names = _manager().recipes.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names)}"
        raise UsageError(f"unknown recipe {name!r} ({hint})")
    return entry


def plan_for(name: str, assignments: list[str] | None, config: Path | None, on_output_dir=None, devices=None):
    from lfkit.recipes.resolve import parse_assignments, read_config, resolve

    recipe = get_recipe(name).value
    with quiet_resolution():
        return resolve(recipe, parse_assignments(assignments or []), read_config(config), on_output_dir, devices)


def slurm_assignments(assignments: list[str] | None, sbatch_lines: list[str] | None):
    """The recipe's key=value and the job's options; nproc_per_node and nnodes follow the request."""
    from lfkit.slurm.options import split

    rest, options = split(assignments or [], sbatch_lines)
    keys = {item.partition("=")[0].strip() for item in rest}
    if "nnodes" in keys or "node_rank" in keys:
        raise UsageError("with --slurm, give nodes=N; each node's rank comes from the allocation")
    if options.devices_per_node and "nproc_per_node" not in keys:
        rest.append(f"nproc_per_node={options.devices_per_node}")
    return rest, options


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
    console.print(f"wrote {output}{also}  (llamafactory-cli {chosen.command} {output})", highlight=False)


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
    from lfkit.recipes.runner import Runner, refuse_finished

    from .plan import preflight, show_on_stderr, step_plans

    if slurm and not dry_run:
        return submit_recipe(name, assignments, config, overwrite, sbatch_lines, no_preflight)
    if sbatch_lines and not slurm:
        raise UsageError("--sbatch goes with --slurm")
    job = None
    if slurm:  # --dry-run --slurm: the plan the job would run and its script; nothing submitted
        assignments, job = slurm_assignments(assignments, sbatch_lines)
    plan = plan_for(
        name,
        assignments,
        config,
        lambda out: None if dry_run else refuse_finished(out, overwrite),
        job.devices_per_node if job else None,
    )
    devices = job.devices_per_node if job else None
    if dry_run:
        memory = {}
        if any(s.command == "train" for s in plan.steps):
            plans = step_plans(plan, devices)
            show_on_stderr(plans)
            memory = {p.step: p.as_dict() for p in plans}
        script = None
        if job is not None:
            from lfkit.slurm.script import render
            from lfkit.slurm.submit import refuse_unrunnable

            refuse_unrunnable(plan)
            script = render(plan.output_dir, plan.recipe.name, job, sys.executable)
        print_json(
            {
                **({"job_script": script} if script else {}),
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
                        **({"memory": memory[s.name]} if s.name in memory else {}),
                    }
                    for s in plan.steps
                ],
            }
        )
        return
    plans = preflight(plan, devices, no_preflight)
    with run_failures():
        records = Runner(
            plan,
            echo=lambda line: console.print(line, highlight=False),
            memory_plans={p.step: p.as_dict() for p in plans},
            verbose=verbose,
        ).run(overwrite=overwrite)
    show_summary(plan, records)


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


def submit_recipe(name, assignments, config, overwrite, sbatch_lines, no_preflight=False) -> str:
    """``lfkit run ... --slurm``: resolve and check here, where the user is; the job runs the same plan."""
    from lfkit.recipes.runner import refuse_finished
    from lfkit.slurm.submit import sbatch_path, submit

    sbatch_path()
    rest, options = slurm_assignments(assignments, sbatch_lines)
    plan = plan_for(name, rest, config, lambda out: refuse_finished(out, overwrite), options.devices_per_node)
    from .plan import preflight

    preflight(plan, options.devices_per_node, no_preflight)
    job_id = submit(plan, options, overwrite)
    tokenized = [s.args.get("tokenized_path") for s in plan.steps if s.command == "train"]
    if options.nodes > 1 and not any(t and Path(t).exists() for t in tokenized):
        console.print(
            "lfkit: hint: every node tokenizes the data before the workers meet; for a large dataset tokenize "
            "once (a one-node run with tokenized_path=DIR) and pass tokenized_path=DIR here",
            highlight=False,
        )
    console.print(
        f"lfkit: submitted job {job_id} ({plan.recipe.name}, {options.nodes} node(s)) -> {plan.output_dir}\n"
        f"       follow it: lfkit status {plan.output_dir}  |  lfkit logs -f {plan.output_dir}",
        highlight=False,
    )
    return job_id
