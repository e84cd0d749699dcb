"""Datasets the user prepared or added, kept in $LFKIT_HOME/datasets.json (written atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from lfkit.atomic import write_json
from lfkit.errors import UsageError
from lfkit.paths import lfkit_home

from .spec import DatasetSpec


def state_file() -> Path:
    return lfkit_home() / "datasets.json"


def load() -> dict[str, DatasetSpec]:
    path = state_file()
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable lfkit dataset registry: {exc}") from None
    return {
        name: DatasetSpec(
            file=Path(entry["file"]),
            formatting=entry.get("formatting", "alpaca"),
            columns=entry.get("columns", {}),
            tags=entry.get("tags", {}),
            origin=entry.get("origin", "added"),
            description=entry.get("description", ""),
        )
        for name, entry in raw.items()
    }


def save(updates: dict[str, DatasetSpec]) -> None:
    current = {name: spec for name, spec in load().items() if name not in updates}
    current.update(updates)
    write_json(
        state_file(),
        {
            name: {
                "file": str(spec.file),
                "formatting": spec.formatting,
                "columns": spec.columns,
                "tags": spec.tags,
                "origin": spec.origin,
                "description": spec.description,
            }
            for name, spec in sorted(current.items())
        },
    )
