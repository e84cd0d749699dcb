"""Printing for the CLI: rich tables for people, --json for scripts, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console

from lfkit.tables import print_table

console = Console(emoji=False)  # a ":name:" in a path or value stays as written


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    print_table(console, title, columns, rows)


def error_line(message: str) -> None:
    # Plain write, not rich: an error stays one line whatever the terminal width.
    sys.stderr.write(f"lfkit: error: {' '.join(str(message).split())}\n")


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: never a traceback for bad input."""
    error_line(message)
    raise typer.Exit(code)
