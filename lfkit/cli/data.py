"""`lfkit datasets` and `lfkit data prepare|add`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from .app import manager
from .output import console, fail, print_json, table

data_app = typer.Typer(help="Prepare and register datasets for LLaMA-Factory.", no_args_is_help=True)
prepare_app = typer.Typer(help="Convert a raw table into LLaMA-Factory splits.", no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")


def list_datasets(as_json: bool) -> None:
    rows = [entry.value.as_dict(entry.name) | {"plugin": entry.plugin} for entry in manager().datasets.entries()]
    if as_json:
        print_json(rows)
        return
    table(
        "datasets (known to LLaMA-Factory by name under lfkit)",
        ["name", "formatting", "rows", "origin", "file"],
        [
            (
                r["name"],
                r["formatting"],
                r["rows"] if r["rows"] is not None else "unreadable",
                r["origin"] + (", synthetic" if r["synthetic"] else ""),
                r["file"],
            )
            for r in rows
        ],
    )


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--train-sizes takes whole numbers separated by commas, got {text!r}") from None
    if not sizes:
        raise UsageError("--train-sizes is empty")
    return sizes


@prepare_app.command("telecom")
def prepare_telecom(
    source: Path = typer.Argument(..., help="The raw table: .xlsx, .csv (UTF-8 or GBK), .json or .jsonl."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the split files."),
    question_column: str = typer.Option("用户问题", help="Column holding the user's question."),
    answer_column: str = typer.Option("答案", help="Column holding the answer labels."),
    category_column: str = typer.Option("属性名", help="Category column (else: the answer's first label prefix)."),
    train_sizes: str = typer.Option("5000,400,100", help="Train split sizes, largest first; smaller ones nest."),
    test_size: int = typer.Option(100, help="Size of the held-out test split."),
    seed: int = typer.Option(0, help="Sampling seed: same seed, same splits."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace split files that already exist."),
    replace: bool = typer.Option(False, "--replace", help="Re-point split names registered for other files."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
):
    """Build balanced telecom_train_* / telecom_test_* splits and register them by name."""
    from ..dataset_registry import telecom

    try:
        result = telecom.prepare(
            source,
            out,
            question_column=question_column,
            answer_column=answer_column,
            category_column=category_column,
            train_sizes=_sizes(train_sizes),
            test_size=test_size,
            seed=seed,
            overwrite=overwrite,
            replace=replace,
        )
    except UsageError as exc:
        fail(str(exc))
    summary = {
        "usable": result.usable,
        "skipped_without_question_or_answer": result.skipped,
        "duplicate_questions": result.duplicates,
        "duplicates_with_another_answer": result.conflicting,
        "files": {name: str(path) for name, path in result.files.items()},
        "categories": {name: dict(c) for name, c in result.categories.items()},
    }
    if as_json:
        print_json(summary)
        return
    names = list(result.splits)
    categories = sorted({c for counts in result.categories.values() for c in counts})
    table(
        "rows per split and category",
        ["category", *names],
        [[c, *(result.categories[n].get(c, 0) for n in names)] for c in categories]
        + [["total", *(len(result.splits[n]) for n in names)]],
    )
    console.print(
        f"{result.usable} usable rows; skipped {result.skipped} without a question or answer; "
        f"dropped {result.duplicates} duplicate questions ({result.conflicting} with another answer).",
        highlight=False,
    )
    console.print(f"registered: {', '.join(names)} (files in {out})", highlight=False)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, eq, column = value.partition("=")
        if not eq or not key or not column:
            raise UsageError(f"{option} takes KEY=NAME, got {value!r}")
        pairs[key] = column
    return pairs


@data_app.command("add")
def add_dataset(
    name: str = typer.Argument(..., help="Name to register (what `dataset:` says in a run)."),
    file: Path = typer.Argument(..., help="A .json (list of objects) or .jsonl file."),
    formatting: str = typer.Option("alpaca", help="alpaca or sharegpt."),
    column: list[str] = typer.Option([], "--column", help="Column KEY=NAME, e.g. prompt=question (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="sharegpt tag KEY=VALUE, e.g. user_tag=user (repeatable)."),
    replace: bool = typer.Option(False, "--replace", help="Re-point a name that is registered for another file."),
):
    """Register a dataset file after checking it parses and has the columns or tags it claims."""
    from ..dataset_registry import add
    from ..dataset_registry.spec import ALPACA_COLUMNS, SHAREGPT_TAGS

    try:
        columns = _pairs(column, "--column")
        tags = _pairs(tag, "--tag")
        known = (*ALPACA_COLUMNS, "messages")
        for key in columns:
            if key not in known:
                raise UsageError(f"unknown column key {key!r}: one of {', '.join(known)}")
        for key in tags:
            if key not in SHAREGPT_TAGS:
                raise UsageError(f"unknown tag key {key!r}: one of {', '.join(SHAREGPT_TAGS)}")
        spec = add.add(name, file, formatting, columns, tags, manager().datasets, replace=replace)
    except UsageError as exc:
        fail(str(exc))
    console.print(f"registered {name}: {spec.formatting}, file {spec.file}", highlight=False)


@data_app.command("remove")
def remove_dataset(name: str = typer.Argument(..., help="A name registered with `data add` or `data prepare`.")):
    """Forget a registered dataset name; its file stays where it is."""
    from ..dataset_registry import state

    entry = manager().datasets.get(name)
    # a registry entry that clashes with a bundled or plugin name (doctor says so) can still be removed
    if entry is not None and entry.value.origin not in ("added", "prepared") and name not in state.load():
        fail(f"dataset {name!r} comes from {entry.plugin}, not from `lfkit data`; it cannot be removed here")
    try:
        file = state.remove(name)
    except UsageError as exc:
        fail(str(exc))
    console.print(f"removed {name}" + (f" (its file {file} is kept)" if file else ""), highlight=False)
