"""`lfkit data add`: register any user file, after checking it parses and has what it claims."""

from __future__ import annotations

from pathlib import Path

from lfkit.errors import UsageError
from lfkit.registry import valid_name

from . import state
from .spec import DatasetSpec, check_rows, load_rows


def add(
    name: str,
    file: Path,
    formatting: str,
    columns: dict[str, str],
    tags: dict[str, str],
    registry,
    replace: bool = False,
) -> DatasetSpec:
    if not valid_name(name):
        raise UsageError(f"dataset name {name!r}: use letters, digits, '_', '-', '.', starting with a letter or digit")
    existing = registry.get(name)
    if existing is not None and existing.value.origin not in ("added", "prepared"):
        raise UsageError(f"dataset {name!r} is already registered by {existing.plugin}; pick another name")
    if formatting not in ("alpaca", "sharegpt"):
        raise UsageError(f"unknown formatting {formatting!r}: alpaca or sharegpt")
    if formatting == "alpaca" and tags:
        raise UsageError("tags are for sharegpt datasets")
    file = Path(file).resolve()
    rows = load_rows(file)
    with open(file, "rb") as head:
        if head.read(3) == b"\xef\xbb\xbf":
            # LLaMA-Factory reads JSON through pyarrow, which takes the mark for content and finds no rows
            raise UsageError(
                f"{file}: starts with a UTF-8 byte-order mark, which LLaMA-Factory's JSON reader cannot read; "
                "save it as UTF-8 without BOM"
            )
    check_rows(file, rows, formatting, columns, tags)
    if formatting == "alpaca" and "query" not in columns and not any("input" in row for row in rows):
        columns = {**columns, "query": None}  # LLaMA-Factory would look for an "input" column
    spec = DatasetSpec(file, formatting=formatting, columns=columns, tags=tags, origin="added")
    state.save({name: spec}, replace=replace)
    return spec
