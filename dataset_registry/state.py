"""Datasets the user prepared or added, kept in $LFKIT_HOME/datasets.json.

Reading never fails a process: this file is read in every Python process of the
environment (activation), so an unreadable file, a corrupt one or a bad entry is
reported (``lfkit doctor``) and left out. A corrupt file is renamed aside, never
deleted. Writes are a locked read-modify-write, atomic, so parallel ``lfkit data``
commands never lose each other's entries.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfkit import problems
from lfkit.atomic import write_json
from lfkit.errors import UsageError
from lfkit.locking import locked
from lfkit.paths import lfkit_home
from lfkit.registry import valid_name
from lfkit.state_files import read_bounded, read_text_bounded

from .spec import DatasetSpec

FIX_BY_COMMAND = "register it again with `lfkit data add` or `lfkit data prepare`"


def state_file() -> Path:
    return lfkit_home() / "datasets.json"


def _set_aside(path: Path) -> Path | None:
    aside = path.with_name(f"{path.name}.corrupt-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return aside


def _spec(entry: Any) -> DatasetSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ValueError("an entry needs a 'file'")
    for key in ("columns", "tags"):
        if not isinstance(entry.get(key, {}), dict):
            raise ValueError(f"'{key}' is not a mapping")
    return DatasetSpec(
        file=Path(entry["file"]),
        formatting=str(entry.get("formatting", "alpaca")),
        columns=entry.get("columns", {}),
        tags=entry.get("tags", {}),
        origin=str(entry.get("origin", "added")),
        description=str(entry.get("description", "")),
    )


def load() -> dict[str, DatasetSpec]:
    """The registered datasets; whatever cannot be read is reported and left out."""
    path = state_file()
    try:
        data = read_bounded(path)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problems.report(
            f"cannot read the dataset registry {path} ({reason}); its datasets are unknown",
            f"make {path} readable, or set LFKIT_HOME to a folder of your own",
        )
        return {}
    try:
        raw = json.loads(data.decode("utf-8"))  # not UTF-8 (a UTF-16 file from an editor) is corrupt too
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError):  # nested too deeply for the parser: as corrupt as any
        aside = _set_aside(path)
        where = f"renamed to {aside}" if aside else "left in place (it could not be renamed)"
        problems.report(
            f"the dataset registry {path} was corrupt and was {where}",
            f"{FIX_BY_COMMAND}; the old file is kept for reference",
        )
        return {}
    specs = {}
    for name, entry in raw.items():
        try:
            if not valid_name(name):
                raise ValueError("names take letters, digits, '_', '-', '.'")
            specs[name] = _spec(entry)
        except ValueError as exc:
            problems.report(
                f"dataset registry {path}: entry {name!r} left out ({exc})",
                f"`lfkit data remove {name!r}`, then {FIX_BY_COMMAND}",
            )
    return specs


def report_set_aside() -> None:
    """Registries an earlier process set aside as corrupt: named (with the way back) until the user
    removes them, since the process that renamed one may have been any `import torch`."""
    path = state_file()
    try:
        found = sorted(path.parent.glob(path.name + ".corrupt-*"))
    except OSError:
        return
    for aside in found:
        problems.report(
            f"the dataset registry was corrupt and was set aside as {aside}; the datasets it held are not registered",
            f"mend it and move it back (`mv {shlex.quote(str(aside))} {shlex.quote(str(path))}`, when {path} does "
            f"not exist) or {FIX_BY_COMMAND}; "
            "delete the old file once done",
        )


def _raw(spec: DatasetSpec) -> dict[str, Any]:
    return {
        "file": str(spec.file),
        "formatting": spec.formatting,
        "columns": spec.columns,
        "tags": spec.tags,
        "origin": spec.origin,
        "description": spec.description,
    }


def _update(change: Callable[[dict[str, Any]], None]) -> None:
    """Locked read-modify-write of the registry file (raw entries, bad ones kept as they are)."""
    path = state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path.with_name(path.name + ".lock")):
            load()  # sets a corrupt file aside (reported) before it is replaced
            try:
                raw = json.loads(read_text_bounded(path))
            except FileNotFoundError:
                raw = {}
            change(raw)
            write_json(path, dict(sorted(raw.items())))
    except OSError as exc:
        raise UsageError(f"cannot write the dataset registry {path}: {exc.strerror or exc}") from None


def save(updates: dict[str, DatasetSpec], replace: bool = False) -> None:
    """Register ``updates``; a name registered for another file needs ``replace``."""

    def change(raw: dict[str, Any]) -> None:
        for name, spec in updates.items():
            old = raw.get(name)
            old_file = old.get("file") if isinstance(old, dict) else None
            if old is not None and not replace and old_file != str(spec.file):
                raise UsageError(
                    f"dataset {name!r} is already registered for {old_file}; pass --replace to point it at {spec.file}"
                )
        raw.update({name: _raw(spec) for name, spec in updates.items()})

    _update(change)


def remove(name: str) -> str | None:
    """Forget ``name``; the file it pointed at (returned) is left where it is."""
    removed: list[Any] = []

    def change(raw: dict[str, Any]) -> None:
        if name not in raw:
            raise UsageError(f"dataset {name!r} is not registered in {state_file()} (see `lfkit datasets`)")
        removed.append(raw.pop(name))

    _update(change)
    entry = removed[0]
    return entry.get("file") if isinstance(entry, dict) else None
