"""Reading a raw table as users download it: .xlsx, .csv (UTF-8, UTF-8 with BOM, or GBK), .json, .jsonl.

Every failure is a UsageError naming the file and, where there is one, the row.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lfkit.errors import UsageError

from .spec import load_rows

SUFFIXES = (".xlsx", ".csv", ".json", ".jsonl")


def _read_csv(path: Path) -> list[dict]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):  # gb18030 is a superset of GBK
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise UsageError(f"{path}: neither UTF-8 nor GBK text") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [dict(row) for row in reader]
    except csv.Error as exc:
        raise UsageError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    if reader.fieldnames is None:
        raise UsageError(f"{path}: empty table")
    return rows


def _read_xlsx(path: Path) -> list[dict]:
    try:
        from openpyxl import load_workbook
    except ImportError:  # pragma: no cover - a dependency of lfkit
        raise UsageError("reading .xlsx needs openpyxl: pip install openpyxl") from None
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise UsageError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__})") from None
    sheet = book.worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    book.close()
    if not rows:
        raise UsageError(f"{path}: empty table")
    header = ["" if cell is None else str(cell).strip() for cell in rows[0]]
    return [
        {header[i]: ("" if value is None else str(value)) for i, value in enumerate(row) if i < len(header)}
        for row in rows[1:]
    ]


def read_table(path: Path) -> list[dict]:
    """Rows as dicts of column -> value. Row numbers in errors count the header as row 1 for .csv/.xlsx."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"{path}: unsupported file type {path.suffix!r}; use {', '.join(SUFFIXES)}")
    try:
        if path.suffix.lower() == ".csv":
            rows = _read_csv(path)
        elif path.suffix.lower() == ".xlsx":
            rows = _read_xlsx(path)
        else:
            return load_rows(path)
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a table") from None
    if not rows:
        raise UsageError(f"{path}: empty table (a header and no rows)")
    return rows
