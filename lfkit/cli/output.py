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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for i, column in enumerate(columns):
        # The first column is a name people copy (a patch id, a plugin): keep it whole.
        # min_width: a header is never cut to "exac…" at 80 columns; cells fold instead
        t.add_column(column, overflow="fold", no_wrap=i == 0, min_width=len(column))
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(t)


def error_line(message: str) -> None:
    # Plain write, not rich: an error stays one line whatever the terminal width.
    sys.stderr.write(f"lfkit: error: {' '.join(str(message).split())}\n")


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: never a traceback for bad input."""
    error_line(message)
    raise typer.Exit(code)
