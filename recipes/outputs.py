"""What a run wrote, so that --overwrite removes exactly that and nothing else.

Each run folder keeps a manifest (``.lfkit-outputs.json``) of the files the run
wrote, each with its fingerprint (size and modification time; the content's sha256
for files up to 8 MiB), refreshed whenever a step ends. ``--overwrite`` deletes only
files in the manifest that are still as the run wrote them, and refuses when anything
else is there: a note the user put beside the adapter, a model copied into the folder,
the files of a run killed before it could record them, a recorded file the user has
edited since (notes added to the run's README.md).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.digests import file_sha256
from lfkit.errors import UsageError
from lfkit.state_files import read_json_bounded

MANIFEST = ".lfkit-outputs.json"
LOCK_FILE = ".lfkit.lock"
BOOKKEEPING = frozenset({MANIFEST, LOCK_FILE})
# A Slurm job's log, written by Slurm itself into the run folder while the job runs.
JOB_LOGS = "slurm-*.out"
# What lfkit itself (or Slurm) rewrites after a step's files were recorded: a run's records, its job files
# and the job's log; these are the run's whatever they hold now.
REWRITTEN = ("run.json", "job.json", "job.sbatch")
# Files up to this size are fingerprinted by content too (notes, configs, logs, small adapters); a
# larger one by size and modification time, which any edit changes.
HASHED_UP_TO = 8 * 2**20


def files_under(root: Path) -> set[str]:
    """Relative paths of every file (and link) under ``root``."""
    found = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
            found.add((base / name).as_posix())
    return found


def _names(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def read_manifest(root: Path) -> dict[str, Any]:
    try:
        data = read_json_bounded(Path(root) / MANIFEST)
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    prints = data.get("fingerprints")
    return {  # names only: whatever else a damaged manifest lists is not taken as the run's
        "files": _names(data.get("files")),
        "user_files": _names(data.get("user_files")),
        # a manifest written before fingerprints were kept has none: its files are taken as recorded
        "fingerprints": prints if isinstance(prints, dict) else {},
    }


def fingerprint(path: Path) -> dict[str, Any] | None:
    """Size and modification time of a file as it is now, and its sha256 when it is small."""
    try:
        info = path.lstat()
        found: dict[str, Any] = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
        if stat.S_ISREG(info.st_mode) and info.st_size <= HASHED_UP_TO:
            found["sha256"] = file_sha256(path)
    except OSError:
        return None
    return found


def changed(path: Path, recorded: Any) -> bool:
    """Whether a recorded file is no longer as the run wrote it (a touched but equal small file is not)."""
    if not isinstance(recorded, dict):
        return False
    try:
        info = path.lstat()
    except OSError:
        return False
    if info.st_size != recorded.get("size"):
        return True
    if info.st_mtime_ns == recorded.get("mtime_ns"):
        return False
    return "sha256" not in recorded or file_sha256(path) != recorded["sha256"]


def is_empty_run_folder(root: Path) -> bool:
    return not (files_under(root) - {LOCK_FILE})


def keep_user_files(root: Path, unfinished: Iterable[Path]) -> None:
    """Before a run continues: unrecorded files outside its unfinished steps' folders are the user's."""
    manifest = read_manifest(root)
    open_dirs = [Path(d).resolve() for d in unfinished]
    user = set(manifest["user_files"])
    for rel in files_under(root) - set(manifest["files"]) - BOOKKEEPING:
        # the run's own record and job files (lfkit writes them only in the run folder itself) and Slurm's
        # log: a run killed before its first record left them unrecorded
        if fnmatch.fnmatch(rel, JOB_LOGS) or rel in REWRITTEN:
            continue
        path = (Path(root) / rel).resolve()
        if not any(path.is_relative_to(d) for d in open_dirs):
            user.add(rel)
    write_json(Path(root) / MANIFEST, {**manifest, "user_files": sorted(user)})


def record(root: Path) -> None:
    """After a step: every file now under ``root`` that is not the user's was written by this run, as it
    is now (the run folder is locked while a step runs: nobody else writes there)."""
    manifest = read_manifest(root)
    present = files_under(root) - BOOKKEEPING - set(manifest["user_files"])
    prints = dict(manifest["fingerprints"])
    for rel in present:
        found = fingerprint(Path(root) / rel)
        if found is not None:
            prints[rel] = found
    files = sorted(set(manifest["files"]) | present)
    write_json(
        Path(root) / MANIFEST,
        {**manifest, "files": files, "fingerprints": {k: prints[k] for k in files if k in prints}},
    )


def removal(root: Path, extra_own: Iterable[str] = ()) -> list[Path]:
    """The files --overwrite deletes under ``root``; a UsageError if anything there is not the run's own."""
    root = Path(root)
    manifest = read_manifest(root)
    own = set(manifest["files"]) | BOOKKEEPING | set(extra_own)
    present = files_under(root)
    foreign = sorted(rel for rel in present - own if not fnmatch.fnmatch(rel, JOB_LOGS))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UsageError(
            f"output_dir {root} holds files lfkit did not record as this run's ({foreign[0]}{more}); "
            "--overwrite removes only a run's own files: move those away (or delete the folder yourself), "
            "or choose another output_dir"
        )
    recorded = manifest["fingerprints"]
    edited = sorted(
        rel
        for rel in present & set(manifest["files"])
        if Path(rel).name not in REWRITTEN
        and not fnmatch.fnmatch(rel, JOB_LOGS)
        and changed(root / rel, recorded.get(rel))
    )
    if edited:
        more = f" and {len(edited) - 1} more" if len(edited) > 1 else ""
        raise UsageError(
            f"output_dir {root}: {edited[0]}{more} changed since the run wrote it; --overwrite removes only a "
            "run's own files as it wrote them: move your edited copy away (or delete the folder yourself), "
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
