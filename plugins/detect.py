"""Which registered family a model folder belongs to, and why (or why not).

Scores, from config.json: model_type 2, an architecture 2, each config_match value
2; from the tokenizer: its tokenizer_match special tokens 2, its marker_tokens 2; from the folder name: a name
pattern 1. The highest score wins; a tie goes to the family registered first
(built-ins before third parties). A family that only matches by name still counts,
so a renamed checkpoint is found.

A family whose model_type is shared with look-alikes (``needs_marker``: LLaMA-2
among the many model_type ``llama`` models: Llama-3, Yi, DeepSeek, Qwen-derived
checkpoints) is claimed only with one of its markers, and never when the
tokenizer carries another family's tokens (``foreign_tokens``). Otherwise the
folder is of no family and gets no defaults: guessing wrong would train it on the
wrong prompt format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfkit.state_files import MODEL_FILE_LIMIT, read_bounded, read_json_bounded

from .family import ModelFamily

# Files whose text names a tokenizer's special tokens (tokenizer.json is read only when these are absent).
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class Detection:
    family: ModelFamily | None
    plugin: str | None
    score: int
    reasons: tuple[str, ...]
    config: dict[str, Any]
    # Families whose model_type / architecture matched but that were not claimed: name -> why not.
    missing: dict[str, str] = field(default_factory=dict)

    def why(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        if self.missing:
            return "; ".join(f"not {name}: {why}" for name, why in self.missing.items())
        return "nothing in config.json or the name matches a family"


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = read_json_bounded(Path(path) / "config.json")
    except (OSError, ValueError):  # a FIFO, a huge or damaged file: nothing read, nothing detected from it
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Tokenizer:
    """What detection reads of a folder's tokenizer: its special tokens and the text of its files."""

    special: dict[str, str]
    text: str

    @classmethod
    def read(cls, folder: Path) -> Tokenizer:
        texts, special = [], {}
        for name in TOKENIZER_FILES:
            try:
                text = read_bounded(folder / name, MODEL_FILE_LIMIT).decode("utf-8", errors="replace")
            except OSError:
                continue
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):
                texts.append(text)
                continue
            texts.append(json.dumps(data, ensure_ascii=False))  # "\uff5c" escapes read as the characters
            if isinstance(data, dict):
                for key in ("bos_token", "eos_token", "unk_token"):
                    value = data.get(key)
                    if isinstance(value, dict):
                        value = value.get("content")
                    if isinstance(value, str) and key not in special:
                        special[key] = value
        if not texts:
            try:
                data = read_json_bounded(folder / "tokenizer.json", MODEL_FILE_LIMIT)
                texts.append(" ".join(str(t.get("content")) for t in data.get("added_tokens") or []))
            except (OSError, ValueError, AttributeError, TypeError):
                pass
        # Remote-code tokenizers (ChatGLM3) define their special tokens in Python.
        for source in sorted(folder.glob("tokenization_*.py")):
            try:
                texts.append(read_bounded(source).decode("utf-8", errors="replace"))
            except OSError:
                continue
        return cls(special, "\n".join(texts))


def score(family: ModelFamily, config: dict[str, Any], folder_name: str, tokenizer: Tokenizer | None = None):
    """(points, reasons, why_not): why_not is set when the family matched by model_type or
    architecture but lacks the marker it needs, or the tokenizer says it is another family."""
    tokenizer = tokenizer or Tokenizer({}, "")
    points, reasons, markers = 0, [], 0
    model_type = config.get("model_type")
    shared = 0
    if model_type and model_type in family.model_types:
        shared += 2
        reasons.append(f"config.json model_type {model_type!r}")
    matched = [a for a in config.get("architectures") or [] if a in family.architectures]
    if matched:
        shared += 2
        reasons.append(f"architecture {matched[0]}")
    points += shared
    lacking = []
    for key, value in family.config_match.items():
        if config.get(key) == value:
            points += 2
            markers += 1
            reasons.append(f"config.json {key}={value!r}")
        else:
            lacking.append(f"config.json {key} is {config.get(key)!r}, not {value!r}")
    if family.tokenizer_match:
        if all(tokenizer.special.get(k) == v for k, v in family.tokenizer_match.items()):
            points += 2
            markers += 1
            reasons.append("tokenizer " + ", ".join(f"{k} {v!r}" for k, v in family.tokenizer_match.items()))
        else:
            got = ", ".join(f"{k} {tokenizer.special.get(k)!r}" for k in family.tokenizer_match)
            lacking.append(f"the tokenizer's {got}")
    if family.marker_tokens:
        if all(t in tokenizer.text for t in family.marker_tokens):
            points += 2
            markers += 1
            reasons.append("tokenizer defines " + ", ".join(family.marker_tokens))
        else:
            lacking.append(
                "the tokenizer lacks " + ", ".join(t for t in family.marker_tokens if t not in tokenizer.text)
            )
    named = False
    for pattern in family.names:
        if re.search(pattern, folder_name.lower()):
            points += 1
            markers += 1
            named = True
            reasons.append(f"folder name {folder_name!r} matches {pattern!r}")
            break
    if family.names and not named:
        lacking.append(f"the folder name {folder_name!r} does not match {' or '.join(map(repr, family.names))}")
    foreign = [t for t in family.foreign_tokens if t in tokenizer.text]
    if shared and foreign:
        return 0, [], f"its tokenizer has {', '.join(foreign)}, which {family.name} has not"
    if shared and family.needs_marker and not markers:
        return 0, [], "; ".join(lacking) or "no marker of the family"
    if family.needs_marker and not shared:
        # Its markers say nothing about another architecture (Mistral also has vocab 32000 and <s>);
        # only the name still finds a renamed checkpoint without a config.json.
        return (1, reasons[-1:], None) if named else (0, [], None)
    return points, reasons, None


def detect(path: str | Path, entries) -> Detection:
    """``entries``: the manager's registry entries of model families."""
    folder = Path(path)
    config = read_config(folder)
    tokenizer = Tokenizer.read(folder) if folder.is_dir() else Tokenizer({}, "")
    best: Detection = Detection(None, None, 0, (), config)
    missing: dict[str, str] = {}
    for entry in entries:
        points, reasons, why_not = score(entry.value, config, folder.name, tokenizer)
        if why_not:
            missing[entry.value.name] = why_not
        elif points > best.score:
            best = Detection(entry.value, entry.plugin, points, tuple(reasons), config)
    if best.family is None and missing:
        return Detection(None, None, 0, (), config, missing)
    return best


def remote_code_files(path: str | Path) -> list[str]:
    """The Python files of a model folder that trust_remote_code would execute."""
    return sorted(p.name for p in Path(path).glob("*.py"))
