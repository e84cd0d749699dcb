"""Checks of what a user points a recipe at: a model, an adapter, dataset names, a template.

Each failure is one UsageError line that says what is wrong and what would fix
it; none of these load a model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lfkit.errors import UsageError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
TINY_PREFIX = "tiny:"


def resolve_model(value: str) -> str:
    """``tiny:FAMILY`` becomes the cached tiny model's folder (built on first use); other values stay."""
    if value.startswith(TINY_PREFIX):
        from lfkit.tiny_models import FAMILIES, tiny_model

        family = value[len(TINY_PREFIX) :]
        if family not in FAMILIES:
            raise UsageError(f"model={value}: no tiny model for {family!r}; known: tiny:{', tiny:'.join(FAMILIES)}")
        return str(tiny_model(family))
    return value


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def check_model(value: str) -> None:
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"model {value} holds no model (no config.json in the folder)")
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


def check_template(name: str) -> None:
    from llamafactory.data.template import TEMPLATES

    if name not in TEMPLATES:
        import difflib

        close = difflib.get_close_matches(name, list(TEMPLATES), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"LLaMA-Factory has no template {name!r}{hint}")
