"""Printing for the CLI: rich tables for people, --json for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(t)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: never a traceback for bad input."""
    err_console.print(f"lfkit: error: {message}", highlight=False, markup=False)
    raise typer.Exit(code)
