"""Which registered family a model folder belongs to, and why.

Scores, from config.json: model_type 2, an architecture 2, each config_match
value 2; from the folder name: a name pattern 1. The highest score wins; a tie
goes to the family registered first (built-ins before third parties). A family
that only matches by name still counts, so a renamed checkpoint is found.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .family import ModelFamily


@dataclass(frozen=True)
class Detection:
    family: ModelFamily | None
    plugin: str | None
    score: int
    reasons: tuple[str, ...]
    config: dict[str, Any]

    def why(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "nothing in config.json or the name matches a family"


def read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def score(family: ModelFamily, config: dict[str, Any], folder_name: str) -> tuple[int, list[str]]:
    points, reasons = 0, []
    model_type = config.get("model_type")
    if model_type and model_type in family.model_types:
        points += 2
        reasons.append(f"config.json model_type {model_type!r}")
    matched = [a for a in config.get("architectures") or [] if a in family.architectures]
    if matched:
        points += 2
        reasons.append(f"architecture {matched[0]}")
    for key, value in family.config_match.items():
        if config.get(key) == value:
            points += 2
            reasons.append(f"config.json {key}={value!r}")
    for pattern in family.names:
        if re.search(pattern, folder_name.lower()):
            points += 1
            reasons.append(f"folder name {folder_name!r} matches {pattern!r}")
            break
    return points, reasons


def detect(path: str | Path, entries) -> Detection:
    """``entries``: the manager's registry entries of model families."""
    folder = Path(path)
    config = read_config(folder)
    best: Detection = Detection(None, None, 0, (), config)
    for entry in entries:
        points, reasons = score(entry.value, config, folder.name)
        if points > best.score:
            best = Detection(entry.value, entry.plugin, points, tuple(reasons), config)
    return best


def remote_code_files(path: str | Path) -> list[str]:
    """The Python files of a model folder that trust_remote_code would execute."""
    return sorted(p.name for p in Path(path).glob("*.py"))
