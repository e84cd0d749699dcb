"""`lfkit plan`: will each train step fit the card, before a node is allocated; and the preflight of `lfkit run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..errors import UsageError
from .app import JSON_OPTION, app
from .output import console, print_json
from .recipe_args import ASSIGNMENTS, CONFIG, SBATCH_LINES, choose_backend, plan_for, quiet_resolution


def gib(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def count(value: int) -> str:
    return f"{value / 1e9:.2f} B" if value >= 1e9 else f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value:,}"


def step_plans(plan, devices: int | None = None, fit: bool = False, trace: bool = False) -> list:
    from lfkit.planning.plan import plan_run

    with quiet_resolution():
        return plan_run(plan, devices, fit, trace)


def as_json(plans: list) -> dict:
    first = plans[0].estimate.parameters if plans else {"total": None, "trainable": None}
    return {"parameters": first, "steps": [p.as_dict() for p in plans]}


def show(plans: list, out: Console = console) -> None:
    """The table of each train step: rows, what it assumes, the verdict and what to change."""
    from lfkit.planning.memory import READING_ROWS, ROW_TITLES

    for p in plans:
        e = p.estimate
        verdict = {True: "fits", False: "does NOT fit", None: "no target"}[p.fits]
        total = e.parameters["total"]
        trainable = e.parameters["trainable"]
        out.print(
            f"[bold]step {p.step}: needs {gib(p.needed)} per worker, {verdict}[/bold] (target: {p.target_source}"
            + (f", {gib(p.target)})" if p.target else ")")
            + f"; nvidia-smi / rocm-smi would read about {gib(p.reading)}; answered by the {p.answered_by}",
            highlight=False,
        )
        out.print(
            f"{p.shape.model_type}: {count(total)} parameters, {count(trainable)} trainable "
            f"({100 * trainable / total:.2f}%); shape from {p.shape.source}",
            highlight=False,
        )
        shown = [(k, v) for k, v in e.rows.items() if v or k in ("overhead", "fragmentation")]
        # with --trace the rows are the formula's and the trace answers: both totals, each named
        by = " (formula)" if p.traced is not None else ""
        traced_needed = [("needed, as the trace answers", f"{p.needed:,}", gib(p.needed))] if by else []
        traced_reading = [("reading, as the trace answers", f"{p.reading:,}", gib(p.reading))] if by else []
        _table(out, None, ["row", "bytes", "size"],
               [(ROW_TITLES[k], f"{v:,}", gib(v)) for k, v in shown if k not in READING_ROWS]
               + [(f"needed: what must be free on the card{by}", f"{e.needed:,}", gib(e.needed))] + traced_needed
               + [(ROW_TITLES[k], f"{v:,}", gib(v)) for k, v in shown if k in READING_ROWS]
               + [(f"reading: what nvidia-smi shows{by}", f"{e.reading:,}", gib(e.reading))]
               + traced_reading)  # fmt: skip
        out.print(
            "the verdict compares 'needed'; the cached blocks above it show in nvidia-smi / rocm-smi, but "
            "PyTorch hands them back before it would run out of memory",
            highlight=False,
            soft_wrap=True,
        )
        out.print(f"assumes: {e.setting.describe()}", highlight=False)
        if p.traced is not None:
            t = p.traced
            tensors = e.tensors
            kinds = ", ".join(f"{k} {gib(v)}" for k, v in sorted(t.kinds.items(), key=lambda kv: -kv[1]) if v >= 2**20)
            out.print(
                f"traced: tensors peak at {gib(t.peak)} ({kinds}); the formula's tensors {gib(tensors)} "
                f"({tensors / t.peak:.2f}x). LLaMA-Factory's preparation of the model and two AdamW steps on fake "
                f"tensors, {' and '.join(map(str, t.traced_layers))} of {t.layers} layers traced, "
                "the rest extrapolated",
                highlight=False,
                soft_wrap=True,
            )
        for note in e.notes:
            out.print(f"note: {note}", highlight=False)
        for line in p.fit.lines() if p.fit else ():
            out.print(f"fits: {line}", highlight=False, soft_wrap=True)
        if p.fits is False:
            if p.suggestions:
                title = "changes that make it fit (cheapest first" + (", by the formula)" if by else ")")
                _table(out, title, ["add to the command", "needed", "note"],
                       [(s.text, gib(s.estimate.needed), s.note) for s in p.suggestions])  # fmt: skip
            else:
                out.print("no single change makes it fit; combine them (e.g. QLoRA and a micro-batch of 1)")


def _table(out: Console, title, columns, rows) -> None:
    from lfkit.tables import print_table

    print_table(out, title, columns, rows, numeric=("bytes", "size", "needed"))


def refuse_real_work(what: str, dry_run: bool = True) -> None:
    """Under LFKIT_SIMULATE nothing really runs (one line, exit 2): checked after the run is resolved,
    so a refusal the simulated platform makes (bf16 on gfx906) is the one shown. ``dry_run``: the
    command has a --dry-run to offer instead."""
    from lfkit.simulation import real_work_refusal

    refusal = real_work_refusal(what, dry_run)
    if refusal is not None:
        raise UsageError(refusal)


def preflight(plan, devices: int | None, skip: bool) -> list:
    """Stop before anything loads when a train step's estimate is far above the card (one line, exit 2)."""
    if skip or not any(s.command == "train" for s in plan.steps):
        return []
    from lfkit.planning.plan import has_target

    if not any(has_target(s.lfkit_args, devices) for s in plan.steps if s.command == "train"):
        return []  # a CPU machine and no gpu_memory=: nothing to hold the plan against

    plans = step_plans(plan, devices)
    refuse_unfit(plans)
    return plans


def refuse_unfit(plans: list) -> None:
    """The first train step whose needed memory is far above its card: one line, exit 2."""
    from lfkit.planning.plan import refusal

    for p in plans:
        if p.refused:
            raise UsageError(refusal(p))


@app.command("plan")
def plan_command(
    name: str = typer.Argument(..., help="Recipe name (see `lfkit recipes`)."),
    assignments: Optional[list[str]] = ASSIGNMENTS,
    config: Optional[Path] = CONFIG,
    json_output: bool = JSON_OPTION,
    slurm: bool = typer.Option(False, "--slurm", help="Plan for the Slurm job's cards (gres=, nodes=)."),
    sbatch_lines: Optional[list[str]] = SBATCH_LINES,
    fit: bool = typer.Option(
        False, "--fit", help="Also find the longest sequence and the largest micro-batch that fit the card."
    ),
    trace: bool = typer.Option(
        False,
        "--trace",
        help="Trace the step on fake tensors (the model class, LLaMA-Factory's LoRA / freeze / full preparation, "
        "the loss and AdamW; no memory used) and let that answer: slower, runs the model's code.",
    ),
):
    """Estimate each train step's device memory per worker, in rows, from config.json alone (no weights).

    Two figures: "needed", what must be free on the card for the step not to run out of memory
    (the verdict, --fit and the preflight use it), and "reading", what nvidia-smi / rocm-smi will
    show, cached blocks PyTorch would hand back included. Give gpu_memory=16GiB to plan for a card
    this machine does not have (a login node).
    """
    backend, assignments = choose_backend(slurm, assignments, sbatch_lines)
    devices = backend.devices_per_node
    if not any(a.partition("=")[0].strip() == "output_dir" for a in assignments):
        # a plan writes nothing; the recipe's folder only has to be named
        assignments.append(f"output_dir={Path(tempfile.gettempdir()) / 'lfkit-plan-unused'}")
    # only config.json (and the tokenizer, where trusted) is read, so no consent is needed; a trace runs the model code
    plan = plan_for(name, assignments, config, devices=devices, runs_model_code=trace)
    plans = step_plans(plan, devices, fit, trace)
    if not plans:
        raise UsageError(f"recipe {name} has no train step whose model folder exists yet to plan")
    if json_output:
        print_json({"recipe": plan.recipe.name, **as_json(plans)})
        return
    show(plans)


def show_on_stderr(plans: list) -> None:
    show(plans, Console(file=sys.stderr, emoji=False))
