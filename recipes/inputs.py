"""What a run reads: model, adapters and dataset files.

A run's output_dir must stay apart from all of them (a merge into the base model's
own folder would destroy it), every dataset file is fingerprinted into run.json so
that a run never resumes on other data, and a step that names lfkit's registered
datasets gets a dataset folder of its own, so it needs no patch of LLaMA-Factory
(``LFKIT_DISABLE_PATCHES=all``) to find them.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from lfkit.digests import feed
from lfkit.errors import UsageError

DATASET_KEYS = ("dataset", "eval_dataset")
DATA_FOLDER = "lfkit-data"


def dataset_names(args: dict[str, Any]) -> list[str]:
    return [n.strip() for key in DATASET_KEYS for n in str(args.get(key) or "").split(",") if n.strip()]


def _entries(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(merged dataset_info entries for the step's names, the user's own entries or None)."""
    from lfkit.dataset_registry.lookup_patch import DATA_CONFIG, DEFAULT_DATASET_DIR, merged_info, user_entries

    folder = args.get("dataset_dir") or DEFAULT_DATASET_DIR
    try:
        user = user_entries(folder)
    except ValueError as exc:
        raise UsageError(f"{Path(folder) / DATA_CONFIG}: malformed JSON ({exc})") from None
    return merged_info(dataset_names(args), user), user


def dataset_files(args: dict[str, Any]) -> dict[str, Path]:
    """Local files (or folders) of the step's datasets, by name; hub datasets are left out."""
    merged, _user = _entries(args)
    return {
        name: Path(entry["file_name"])
        for name, entry in merged.items()
        if name in dataset_names(args) and isinstance(entry, dict) and entry.get("file_name")
    }


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    target = Path(path)
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    for file in files:
        if target.is_dir():
            digest.update(file.relative_to(target).as_posix().encode() + b"\0")
        feed(digest, file)
    return digest.hexdigest()


def fingerprints(args: dict[str, Any]) -> dict[str, dict[str, str]]:
    """name -> {file, sha256} for each local dataset of a step; a missing file is one UsageError line."""
    out = {}
    user = _entries(args)[1] or {}
    for name, path in dataset_files(args).items():
        if not path.exists():
            if name in user:  # the user's own dataset_info.json names it, not lfkit's registry
                where = Path(args.get("dataset_dir") or ".") / "dataset_info.json"
                fix = f"mend its entry in {where}"
            else:
                fix = f"`lfkit data remove {name}` and register it again"
            raise UsageError(f"dataset {name!r}: its file {path} is gone; put it back, or {fix}")
        stat = path.stat()
        out[name] = {"file": str(path), "sha256": _sha256(str(path), stat.st_size, stat.st_mtime_ns)}
    return out


def materialize(args: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The step's args with a dataset_dir of its own where it names lfkit's registered datasets."""
    from lfkit.atomic import write_json
    from lfkit.dataset_registry.lookup_patch import DATA_CONFIG

    merged, user = _entries(args)
    if not any(name not in (user or {}) and name in merged for name in dataset_names(args)):
        return args  # only the user's own datasets: their dataset_dir works as it is
    target = Path(folder) / DATA_FOLDER
    write_json(target / DATA_CONFIG, {**(user or {}), **merged})
    return {**args, "dataset_dir": str(target)}


def _local(value: str | None) -> list[Path]:
    return [Path(p.strip()).resolve() for p in str(value or "").split(",") if p.strip() and Path(p.strip()).exists()]


def refuse_overlap(output_dir: Path | None, reads: list[tuple[str, Path]]) -> None:
    """output_dir must not be, contain or lie inside anything the run reads."""
    if output_dir is None:
        return
    out = Path(output_dir).resolve()
    for what, path in reads:
        if out == path or path.is_relative_to(out) or out.is_relative_to(path):
            relation = "is" if out == path else "contains" if path.is_relative_to(out) else "lies inside"
            raise UsageError(
                f"output_dir {out} {relation} the {what} this run reads ({path}); choose a folder of its own"
            )


def given_paths(params: dict[str, Any]) -> list[tuple[str, Path]]:
    """The model and adapter folders a user gave, before anything is resolved (for the earliest refusal)."""
    return [(key, p) for key in ("model", "adapter") for p in _local(params.get(key))]


def check_apart(output_dir: Path | None, steps, made_by_run) -> None:
    """output_dir must stay apart from every model, adapter and dataset file a step reads from outside the run."""
    for step in steps:
        reads = [("model", p) for p in _local(step.args.get("model_name_or_path"))]
        reads += [("adapter", p) for p in _local(step.args.get("adapter_name_or_path"))]
        reads += [(f"dataset {n}", Path(d["file"]).resolve()) for n, d in step.datasets.items()]
        refuse_overlap(output_dir, [(what, path) for what, path in reads if not made_by_run(step, str(path))])
