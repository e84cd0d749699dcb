"""`lfkit runs` and `lfkit show`: past runs at a glance, and one run in full."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from .app import JSON_OPTION, app, manager
from .output import console, print_json, table


def _clock(seconds) -> str:
    from lfkit.state_files import number

    if number(seconds) is None:  # absent, or not a number in a hand-edited record
        return ""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


@app.command("runs")
def runs_command(
    root: Path = typer.Argument(Path("runs"), help="Where to look for run folders (and below, two levels)."),
    as_json: bool = JSON_OPTION,
):
    """List past runs under ROOT and those lfkit recorded: recipe, status, start, duration, key metric, folder."""
    from lfkit.launching.backends import run_status
    from lfkit.recipes.history import all_runs

    given = root != Path("runs")
    if given and not root.expanduser().is_dir():
        raise UsageError(f"{root}: no such folder (give the folder your runs are under, or nothing for ./runs)")
    found = all_runs(root.expanduser(), run_status)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"no runs under {root} and none recorded in lfkit's home", highlight=False)
        return
    table(
        f"runs ({len(found)}; `lfkit show FOLDER` for one)",
        ["recipe", "status", "started", "time", "metric", "folder"],
        [
            (
                r["recipe"],
                r["status"],
                (r["started"] or "")[5:16].replace("T", " "),
                _clock(r["seconds"]),
                r["metric"],
                r["folder"],
            )
            for r in found
        ],  # fmt: skip
    )


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _listing(value) -> list:
    return value if isinstance(value, list) else []


def _differences(record: dict, recipe) -> list[tuple[str, str, str]]:
    """(step, key, value) of resolved arguments a user gave or changed against the recipe's own
    (those lfkit resolved itself are notes, shown apart with their why)."""
    from lfkit.recipes.run_folder import planned_steps

    out = []
    steps = {s.name: s for s in recipe.steps} if recipe else {}
    for name, step in planned_steps(record).items():
        own = steps[name].args if name in steps else {}
        given = {**_mapping(step.get("args")), **_mapping(step.get("lfkit_args"))}
        resolved = {str(note).partition(":")[0] for note in _listing(step.get("notes"))}  # shown with their why
        for key, value in given.items():
            if key in resolved:
                continue
            base = own.get(key)
            templated = isinstance(base, str) and "${" in base
            if key not in own or (not templated and base != value):
                out.append((name, key, str(value)))
    return out


@app.command("show")
def show_command(folder: Path = typer.Argument(..., help="A run folder (output_dir)."), as_json: bool = JSON_OPTION):
    """One run: its steps and results, the arguments that differ from the recipe, metrics and plots."""
    from lfkit.launching.backends import run_status
    from lfkit.recipes.history import describe, is_run_folder
    from lfkit.recipes.run_folder import RUN_FILE, planned_steps, read_record, record_problem
    from lfkit.recipes.summary import key_result

    folder = folder.expanduser().resolve()
    problem = record_problem(folder)
    if problem is not None:
        raise UsageError(f"{folder}: {problem}")
    if not (folder / RUN_FILE).is_file() or not is_run_folder(folder):
        raise UsageError(f"{folder} is not an lfkit run folder (no run.json of a run)")
    described = describe(folder, run_status)  # first: it mends a run.json left saying "running"
    record = read_record(folder) or {}
    entry = manager().recipes.get(record.get("recipe")) if isinstance(record.get("recipe"), str) else None
    recipe = entry.value if entry is not None else None
    single = "step" in record
    steps = []
    for name, step in planned_steps(record).items():
        step_dir = folder if single else folder / name
        step_record = read_record(step_dir) if step_dir.is_dir() else None
        # one step run in the run's own folder is the run: its status is the settled one
        status = described["status"] if single else (step_record or {}).get("status", "not started")
        settled = {**step_record, "status": status} if step_record else None
        steps.append({
            "step": name, "command": step.get("command"), "folder": str(step_dir),
            "status": status, "seconds": (step_record or {}).get("seconds"),
            "result": key_result(step.get("command"), step_dir, settled) if settled else "",
        })  # fmt: skip
    metrics = {
        str(p.relative_to(folder)): p for p in sorted(folder.rglob("metrics.json")) if "checkpoint" not in str(p)
    }
    plots = [str(p) for p in sorted(folder.rglob("*.png")) if "checkpoint" not in str(p)]
    # What lfkit resolved on its own (recipe defaults of a model family, auto precision), with the why.
    notes = {name: _listing(step.get("notes")) for name, step in planned_steps(record).items()}
    info = {**described, "steps": steps, "changed": _differences(record, recipe),
            "notes": {name: n for name, n in notes.items() if n}, "plots": plots,
            "metrics": {k: read_record(v.parent, v.name) for k, v in metrics.items()}}  # fmt: skip
    if as_json:
        print_json(info)
        return
    from rich.text import Text

    from lfkit.tables import printable

    # what a run.json holds is printed as text: a "[/bold]" or an escape sequence in it is not acted on
    console.print(
        Text(str(folder), style="bold")
        + Text(printable(f": {info['recipe']} {info['status']}  {_clock(info['seconds'])}")),
        highlight=False,
    )
    table("steps", ["step", "status", "time", "result"],
          [(s["step"], s["status"], _clock(s["seconds"]), s["result"]) for s in steps])  # fmt: skip
    if info["changed"]:
        table("arguments that differ from the recipe", ["step", "key", "value"], info["changed"])
    for name, step_notes in info["notes"].items():
        for note in step_notes:
            console.print(printable(f"resolved by lfkit, step {name}: {note}"), highlight=False, markup=False)
    for name, data in info["metrics"].items():
        figures = {k: v for k, v in (data or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if figures:
            line = f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
            console.print(printable(line), highlight=False, markup=False)
    for plot in plots:
        console.print(printable(f"plot: {plot}"), highlight=False, markup=False)
