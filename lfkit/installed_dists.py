"""The installed distributions (name, version) and lfkit's entry points, read once per install.

importlib.metadata reads every distribution's files on each question: listing lfkit's entry
points opens the entry_points.txt of all ~150 distributions of a training environment, and
each version asked scans sys.path again; importing importlib.metadata alone costs 20 ms. A
command like `lfkit patches` asked all of it at every start. The answers are kept in lfkit's
cache, named by sys.path and checked against what installing or removing a package changes:
the names and times of each folder's ``*.dist-info`` / ``*.egg-info`` entries and of their
METADATA and entry_points.txt. Reading that is a listing and a few stats per distribution.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import sys
from typing import Any

from lfkit.paths import lfkit_home, may_write_home
from lfkit.state_files import read_json_bounded

FORMAT = 1
_METADATA_FILES = ("METADATA", "PKG-INFO", "entry_points.txt")
_INDEX: dict[tuple[str, ...], _Index] = {}


def normalize(name: str) -> str:
    """PEP 503: the name pip and importlib.metadata match distributions by."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _stamp(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _fingerprint(entries: tuple[str, ...]) -> list[Any]:
    """What changes when a distribution is installed, removed or rewritten under these entries:
    the names and times of the metadata folders and files (not a folder's own time, which any
    other file written there changes)."""
    found: list[Any] = []
    for entry in entries:
        folder = entry or os.getcwd()
        try:
            with os.scandir(folder) as listing:
                infos = sorted(e.name for e in listing if e.name.endswith((".dist-info", ".egg-info")))
        except (NotADirectoryError, FileNotFoundError, PermissionError):
            # a zip or a missing folder: its stamp is all there is to compare
            found.append([entry, _stamp(folder)])
            continue
        stamps = []
        for name in infos:
            path = os.path.join(folder, name)
            stamps.append([name, _stamp(path), *(_stamp(os.path.join(path, f)) for f in _METADATA_FILES)])
        found.append([entry, stamps])
    return found


def _entry_points() -> list[list[str]]:
    from importlib import metadata

    points = []
    for ep in metadata.entry_points(group="lfkit"):
        dist = getattr(ep, "dist", None)
        source = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
        points.append([ep.name, ep.value, source])
    return points


def _read_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _sound(value: Any) -> bool:
    """The shape _Index writes: entry points as [group, name, value] strings, versions as strings or None."""
    if not isinstance(value, dict):
        return False
    points, versions = value.get("entry_points"), value.get("versions")
    return (
        isinstance(points, list)
        and all(isinstance(p, list) and len(p) == 3 and all(isinstance(x, str) for x in p) for p in points)
        and isinstance(versions, dict)
        and all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in versions.items())
    )


class _Index:
    """The cache file of one sys.path: entry points read at once, versions as they are asked."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.identity = {"format": FORMAT, "python": sys.version, "prefix": sys.prefix, "found": _fingerprint(entries)}
        digest = hashlib.sha256(json.dumps([sys.prefix, entries]).encode()).hexdigest()[:16]
        self.path = lfkit_home() / "cache" / f"installed-{digest}.json"
        self.value: dict[str, Any] | None = None
        try:
            kept = read_json_bounded(self.path)
            if kept.get("identity") == self.identity and _sound(kept["value"]):
                self.value = kept["value"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass  # read again, and the file replaced: a damaged cache must not stay for ever
        if self.value is None:
            self.value = {"entry_points": _entry_points(), "versions": {}}
            self._keep()

    def _keep(self) -> None:
        if not may_write_home():
            return
        with contextlib.suppress(OSError):
            from lfkit.atomic import write_json

            write_json(self.path, {"identity": self.identity, "value": self.value})

    def version(self, dist: str) -> str | None:
        key = normalize(dist)
        versions = self.value["versions"]
        if key not in versions:
            versions[key] = _read_version(dist)
            self._keep()
        return versions[key]


def _index() -> _Index:
    entries = tuple(sys.path)
    if entries not in _INDEX:
        _INDEX[entries] = _Index(entries)
    return _INDEX[entries]


def entry_points() -> list[list[str]]:
    """lfkit's entry points on this process's sys.path: ``[[name, value, "dist version"], ...]``."""
    return _index().value["entry_points"]


def version(dist: str) -> str | None:
    """The installed version of ``dist`` (as importlib.metadata.version answers), or None."""
    return _index().version(dist)


def load_entry_point(value: str) -> Any:
    """The object an entry point names (``module:attr.attr``), as EntryPoint.load imports it."""
    module_name, _, attrs = value.partition(":")
    target = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.split("[")[0].strip().split(".")):
        target = getattr(target, attr)
    return target
