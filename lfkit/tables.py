"""Tables that read at any width: on a terminal, in a pipe, a CI log or a Slurm output file.

A table is drawn when every cell fits whole in the width (a pipe reads as 80 columns).
Otherwise each row becomes a short block of ``column: value`` lines: nothing is cut to
"exac…", folded into a column one letter wide, or squeezed out of its header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# Control characters other than tab: an escape sequence in a hand-edited record would move the
# cursor, clear the screen or set the window title where a listing prints it.
_CONTROL = dict.fromkeys([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0)], "?")


def printable(text: str) -> str:
    return text.translate(_CONTROL)


def print_table(
    console: Console,
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: Iterable[str] = (),
) -> None:
    cells = [["" if cell is None else printable(str(cell)) for cell in row] for row in rows]
    right = set(numeric)
    drawn = Table(title=title, title_justify="left")
    for column in columns:
        drawn.add_column(column, no_wrap=True, justify="right" if column in right else "left")
    for row in cells:
        drawn.add_row(*(Text(cell) for cell in row))  # Text: a "[...]" in a path is not markup
    natural = Measurement.get(console, console.options.update_width(100_000), drawn).maximum
    if natural <= console.width:
        console.print(drawn)
        return
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    for row in cells:
        for index, (column, cell) in enumerate(zip(columns, row, strict=False)):
            if cell or index == 0:
                lead = "- " if index == 0 else "  "
                console.print(Text(f"{lead}{column}: {cell}"), soft_wrap=True)
