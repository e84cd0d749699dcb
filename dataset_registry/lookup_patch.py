"""Registry names inside LLaMA-Factory: a materialised dataset folder, and a lookup patch.

LLaMA-Factory reads one ``dataset_dir/dataset_info.json`` and joins each
``file_name`` to ``dataset_dir`` (an absolute one stays as it is). Runs that lfkit
starts get a folder whose dataset_info.json merges the user's entries with the
registry's (``materialize``); under activation, plain ``llamafactory-cli`` gets the
same merge from the ``lf-dataset-lookup`` patch of ``loader.get_dataset_list``.
Either way the user's own entry wins a name clash, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.lf_versions import RANGE
from lfkit.patching import Patch, PatchContext
from lfkit.state_files import read_json_bounded

logger = logging.getLogger("lfkit.datasets")
DATA_CONFIG = "dataset_info.json"
# LLaMA-Factory's own default (DataArguments.dataset_dir)
DEFAULT_DATASET_DIR = "data"


def registered() -> dict[str, Any]:
    """The registered datasets by name (their registry entries)."""
    from lfkit.plugin_manager import get_manager

    return {entry.name: entry for entry in get_manager().datasets.entries()}


def not_a_folder(dataset_dir: Any) -> bool:
    """LLaMA-Factory's dataset_dir values that name no local folder: ONLINE, REMOTE:<repo>, a dict."""
    return isinstance(dataset_dir, dict) or str(dataset_dir) == "ONLINE" or str(dataset_dir).startswith("REMOTE:")


def user_entries(dataset_dir: str | Path) -> dict[str, Any] | None:
    """The entries of dataset_dir/dataset_info.json with absolute file names; None without the file."""
    path = Path(dataset_dir) / DATA_CONFIG
    if not path.is_file():
        return None
    try:
        entries = read_json_bounded(path)
    except OSError as exc:  # too big to be an index of datasets
        raise ValueError(exc.strerror or str(exc)) from None
    if not isinstance(entries, dict):
        raise ValueError("not a JSON object of dataset names")
    # Make the user's relative file names absolute, so the merged info works from any folder.
    for entry in entries.values():
        if isinstance(entry, dict) and "file_name" in entry and not os.path.isabs(entry["file_name"]):
            entry["file_name"] = str((Path(dataset_dir) / entry["file_name"]).resolve())
    return entries


def merged_info(names: list[str] | None, user: dict[str, Any] | None) -> dict[str, Any]:
    """The user's entries plus the registry's for ``names`` (all when None); the user's win."""
    registry = registered()
    merged = dict(user or {})
    for name in registry if names is None else names:
        entry = registry.get(name)
        if entry is None:
            continue
        if name in merged and merged[name] == entry.value.dataset_info():
            continue  # a folder lfkit materialised: the same entry, nothing to choose between
        if name in merged:
            logger.warning(
                "lfkit: dataset %r: your dataset_info.json entry wins over the one from %s", name, entry.plugin
            )
            continue
        merged[name] = entry.value.dataset_info()
    return merged


def materialize(out_dir: Path, user_dataset_dir: str | Path | None = None) -> Path:
    """Write out_dir/dataset_info.json holding the user's entries and every registry dataset."""
    user = user_entries(user_dataset_dir) if user_dataset_dir else None
    write_json(Path(out_dir) / DATA_CONFIG, merged_info(None, user))
    return Path(out_dir)


def merged_folder(info: dict[str, Any]) -> Path:
    """A folder whose dataset_info.json is ``info``, in lfkit's cache, named by its content.

    Every supported LLaMA-Factory reads a folder (0.9.3's get_dataset_list takes no dict), and
    the entries' file names are absolute, so LLaMA-Factory's join with the folder keeps them."""
    import hashlib

    from lfkit.paths import lfkit_home

    text = json.dumps(info, sort_keys=True, ensure_ascii=False, indent=2)
    folder = lfkit_home() / "cache" / "dataset-dirs" / hashlib.sha256(text.encode()).hexdigest()[:16]
    if not (folder / DATA_CONFIG).is_file():
        from lfkit.atomic import write_text

        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / DATA_CONFIG, text)
    return folder


def _apply(loader, ctx: PatchContext) -> None:
    original = loader.get_dataset_list

    def get_dataset_list(dataset_names, dataset_dir):
        if not dataset_names or not_a_folder(dataset_dir):
            return original(dataset_names, dataset_dir)
        registry = registered()
        wanted = [name for name in dataset_names if name in registry]
        if not wanted:
            return original(dataset_names, dataset_dir)
        user = user_entries(dataset_dir)
        if user is None and len(wanted) < len(dataset_names):
            return original(dataset_names, dataset_dir)  # LLaMA-Factory's own error for the unknown ones
        merged = merged_info(wanted, user)
        if merged == user:  # a folder lfkit materialised: it holds every registered entry already
            return original(dataset_names, dataset_dir)
        return original(dataset_names, str(merged_folder(merged)))

    get_dataset_list.__wrapped__ = original
    ctx.replace(loader, "get_dataset_list", get_dataset_list)


PATCH = Patch(
    id="lf-dataset-lookup",
    why="let plain llamafactory-cli find lfkit's registered datasets by name",
    target="llamafactory.data.loader",
    apply=_apply,
    reference="LLaMA-Factory v0.9.3-v0.9.5 data/parser.py get_dataset_list (imported by name in data/loader.py)",
    requires=RANGE,
)
