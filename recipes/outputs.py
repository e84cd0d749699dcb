"""What a run wrote, so that --overwrite removes exactly that and nothing else.

Each run folder keeps a manifest (``.lfkit-outputs.json``) of the files the run
wrote, refreshed whenever a step ends. ``--overwrite`` deletes only files in the
manifest and refuses when anything else is there: a note the user put beside the
adapter, a model copied into the folder, the files of a run killed before it could
record them.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from pathlib import Path

from lfkit.atomic import write_json
from lfkit.errors import UsageError

MANIFEST = ".lfkit-outputs.json"
LOCK_FILE = ".lfkit.lock"
BOOKKEEPING = frozenset({MANIFEST, LOCK_FILE})
# A Slurm job's log, written by Slurm itself into the run folder while the job runs.
JOB_LOGS = "slurm-*.out"


def files_under(root: Path) -> set[str]:
    """Relative paths of every file (and link) under ``root``."""
    found = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            found.add((base / name).as_posix())
    return found


def read_manifest(root: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {"files": list(data.get("files", [])), "user_files": list(data.get("user_files", []))}


def is_empty_run_folder(root: Path) -> bool:
    return not (files_under(root) - {LOCK_FILE})


def keep_user_files(root: Path, unfinished: Iterable[Path]) -> None:
    """Before a run continues: unrecorded files outside its unfinished steps' folders are the user's."""
    manifest = read_manifest(root)
    open_dirs = [Path(d).resolve() for d in unfinished]
    user = set(manifest["user_files"])
    for rel in files_under(root) - set(manifest["files"]) - BOOKKEEPING:
        if fnmatch.fnmatch(rel, JOB_LOGS):
            continue
        path = (Path(root) / rel).resolve()
        if not any(path.is_relative_to(d) for d in open_dirs):
            user.add(rel)
    write_json(Path(root) / MANIFEST, {**manifest, "user_files": sorted(user)})


def record(root: Path) -> None:
    """After a step: every file now under ``root`` that is not the user's was written by this run."""
    manifest = read_manifest(root)
    present = files_under(root) - BOOKKEEPING - set(manifest["user_files"])
    write_json(Path(root) / MANIFEST, {**manifest, "files": sorted(set(manifest["files"]) | present)})


def removal(root: Path, extra_own: Iterable[str] = ()) -> list[Path]:
    """The files --overwrite deletes under ``root``; a UsageError if anything there is not the run's own."""
    root = Path(root)
    own = set(read_manifest(root)["files"]) | BOOKKEEPING | set(extra_own)
    present = files_under(root)
    foreign = sorted(rel for rel in present - own if not fnmatch.fnmatch(rel, JOB_LOGS))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(
            f"output_dir {root} holds files lfkit did not record as this run's ({foreign[0]}{more}); "
            "--overwrite removes only a run's own files: move those away (or delete the folder yourself), "
            "or choose another output_dir"
        )
    return [root / rel for rel in sorted(present) if rel != LOCK_FILE]


def remove(root: Path, files: Iterable[Path]) -> None:
    """Delete ``files``, then the folders under ``root`` they leave empty."""
    for path in files:
        Path(path).unlink(missing_ok=True)
    for folder, _dirs, _files in sorted(os.walk(root), key=lambda item: -len(item[0])):
        if Path(folder) != Path(root) and not os.listdir(folder):
            os.rmdir(folder)
