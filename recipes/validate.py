"""Checks of what a user points a recipe at: a model, an adapter, dataset names, a template.

Each failure is one UsageError line that says what is wrong and what would fix
it; none of these load a model.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from lfkit.errors import UsageError
from lfkit.installed_facts import llamafactory_files, remembered
from lfkit.state_files import read_json_bounded

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
TINY_PREFIX = "tiny:"


def resolve_model(value: str) -> str:
    """``tiny:FAMILY`` becomes the cached tiny model's folder (built on first use); other values stay."""
    if value.startswith(TINY_PREFIX):
        from lfkit.tiny_models import FAMILIES, tiny_model

        family = value[len(TINY_PREFIX) :]
        if family not in FAMILIES:
            raise UsageError(f"model={value}: no tiny model for {family!r}; known: tiny:{', tiny:'.join(FAMILIES)}")
        try:
            return str(tiny_model(family))
        except OSError as exc:  # a read-only or full LFKIT_HOME
            from lfkit.paths import lfkit_home

            raise UsageError(
                f"model={value}: cannot build the tiny model under {lfkit_home()} ({exc.strerror or exc}); "
                "set LFKIT_HOME to a folder you can write"
            ) from None
    return value


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def read_config_json(folder: Path, what: str, name: str = "config.json") -> dict:
    """A model's (or adapter's) JSON config; one UsageError line when it is missing or corrupt."""
    path = Path(folder) / name
    try:
        data = read_json_bounded(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {folder} holds no {name}") from None
    except (OSError, ValueError) as exc:  # a FIFO or a huge file too: never read, never a hang
        raise UsageError(f"{what} {folder}: {name} is corrupt ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {folder}: {name} is corrupt (not a JSON object)")
    if name == "config.json":
        from lfkit.planning.shapes import config_problem

        problem = config_problem(data)
        if problem:
            raise UsageError(f"{what} {folder}: {problem}")
    return data


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot load (a bad or truncated header, missing bytes), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "shorter than a safetensors header"
            length = struct.unpack("<Q", head)[0]
            if length > min(size - 8, 100 << 20):
                return "its header length is past the end of the file"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return exc.strerror or str(exc)
    except (UnicodeDecodeError, ValueError):
        return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    if 8 + length + max(ends, default=0) > size:
        return f"truncated ({size} bytes, the header promises {8 + length + max(ends, default=0)})"
    return None


def check_weights(folder: Path, what: str) -> None:
    """Every safetensors file of a folder has a sound header and all its bytes; shards named by an index exist."""
    folder = Path(folder)
    for index in folder.glob("*.safetensors.index.json"):
        weight_map = read_config_json(folder, what, index.name).get("weight_map", {})
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise UsageError(f"{what} {folder}: {index.name} names {shard}, which is missing")
    for file in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            raise UsageError(f"{what} {folder}: {file.name} is corrupt: {problem}")


def check_model(value: str) -> None:
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {value} holds no model (no config.json in the folder)")
        read_config_json(path, "model")
        check_weights(path, "model")
        return
    if path.exists():
        raise UsageError(f"model {value} is a file; give the model's folder")
    if _HUB_ID.match(value) and not value.startswith((".", "~")):
        if _hub_cached(value):
            return
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
            raise UsageError(
                f"model {value}: no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
            )
        return  # a hub id LLaMA-Factory may still download
    raise UsageError(f"model {value}: no such folder")


def check_adapter(value: str) -> None:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"adapter {value}: no such folder")
    if not (path / "adapter_config.json").is_file():
        raise UsageError(f"adapter {value} holds no adapter (no adapter_config.json); a merged model goes in model=")
    read_config_json(path, "adapter", "adapter_config.json")
    if not any((path / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise UsageError(f"adapter {value} holds no adapter weights (adapter_model.safetensors)")
    check_weights(path, "adapter")


def check_datasets(value: str, dataset_dir: str | None, where: str) -> None:
    from lfkit.dataset_registry.lookup_patch import DATA_CONFIG, DEFAULT_DATASET_DIR, user_entries
    from lfkit.plugin_manager import get_manager

    folder = dataset_dir or DEFAULT_DATASET_DIR
    try:
        user = user_entries(folder) or {}
    except ValueError as exc:
        raise UsageError(f"{Path(folder) / DATA_CONFIG}: malformed JSON ({exc})") from None
    names = set(get_manager().datasets.names()) | set(user)
    for name in (n.strip() for n in str(value).split(",")):
        if name and name not in names:
            import difflib

            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see `lfkit datasets`)"
            raise UsageError(f"{where}: unknown dataset {name!r}{hint}")


def _template_names() -> list[str]:
    def read() -> list[str]:
        from llamafactory.data.template import TEMPLATES

        return sorted(TEMPLATES)

    # Plugins register templates when LLaMA-Factory's template module is imported: the names
    # depend on which patches aim at it, and on the settings that turn patches off.
    from lfkit.plugin_manager import get_manager

    states = get_manager().patches.states.values()
    patches = sorted(f"{s.patch.id}@{s.plugin}" for s in states if s.patch.target == "llamafactory.data.template")
    depends = llamafactory_files(["data/template.py"])
    if depends is not None:
        settings = {k: os.environ.get(k) for k in ("LFKIT_DISABLE_PATCHES", "LFKIT_SIMULATE", "LFKIT_AUTOLOAD")}
        depends.update(patches=patches, settings=settings)
    return remembered("llamafactory-templates", depends, read)


def check_template(name: str) -> None:
    templates = _template_names()
    if name not in templates:
        import difflib

        close = difflib.get_close_matches(name, templates, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"LLaMA-Factory has no template {name!r}{hint}")
