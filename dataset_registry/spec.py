"""A dataset spec: a LLaMA-Factory dataset_info.json entry plus where its file comes from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lfkit.errors import UsageError

ALPACA_COLUMNS = ("prompt", "query", "response", "history", "system")
SHAREGPT_TAGS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)
# LLaMA-Factory's defaults (data/parser.py DatasetAttr)
ALPACA_DEFAULTS = {"prompt": "instruction", "query": "input", "response": "output"}
# The telecom fine-tune's telecom_train_* entry names exactly these columns.
TELECOM_COLUMNS = ALPACA_DEFAULTS
SHAREGPT_DEFAULTS = {
    "messages": "conversations",
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


@dataclass(frozen=True)
class DatasetSpec:
    lfkit_record: ClassVar[str] = "dataset"  # what the plugin manager checks register() against
    file: Path
    formatting: str = "alpaca"
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    origin: str = "plugin"  # bundled | prepared | added | plugin
    synthetic: bool = False
    description: str = ""

    def dataset_info(self) -> dict[str, Any]:
        """The dataset_info.json entry, with an absolute file_name (LLaMA-Factory joins it as is)."""
        entry: dict[str, Any] = {"file_name": str(Path(self.file).resolve())}
        if self.formatting != "alpaca":
            entry["formatting"] = self.formatting
        if self.columns:
            entry["columns"] = dict(self.columns)
        if self.tags:
            entry["tags"] = dict(self.tags)
        return entry

    def as_dict(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "formatting": self.formatting,
            "rows": count_rows(self.file),
            "file": str(self.file),
            "origin": self.origin,
            "synthetic": self.synthetic,
            "description": self.description,
        }


def load_rows(path: Path) -> list[dict]:
    """Rows of a .json (a list of objects) or .jsonl file; UsageError with file and place otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix.lower() in (".csv", ".tsv", ".xlsx", ".xls", ".parquet", ".arrow"):
        raise UsageError(
            f"{path}: a {path.suffix.lower()[1:].upper()} table; lfkit takes datasets as .json or .jsonl records "
            "(alpaca or sharegpt): convert it, or turn a question / answer table into splits with "
            "`lfkit data prepare telecom`"
        )
    if path.exists() and not path.is_file():  # a FIFO would block the read for ever
        raise UsageError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}: line {number}: malformed JSON: {exc.msg}") from None
                except RecursionError:
                    raise UsageError(f"{path}: line {number}: nested too deeply") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: line {exc.lineno} column {exc.colno}: malformed JSON: {exc.msg}") from None
        except RecursionError:
            raise UsageError(f"{path}: nested too deeply") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"{path}: expected a list of JSON objects")
    if not rows:
        raise UsageError(f"{path}: no rows")
    return rows


def count_rows(path: Path) -> int | None:
    try:
        return len(load_rows(path))
    except UsageError:
        return None


def check_rows(path: Path, rows: list[dict], formatting: str, columns: dict[str, str], tags: dict[str, str]) -> None:
    """Each row has the columns (alpaca) or the messages and tags (sharegpt) the spec claims."""
    if formatting == "alpaca":
        wanted = {**ALPACA_DEFAULTS, **columns}
        required = [wanted["prompt"], wanted["response"]] + [
            columns[k] for k in columns if k not in ("prompt", "response")
        ]
        for number, row in enumerate(rows, 1):
            for column in required:
                if column not in row:
                    raise UsageError(f"{path}: row {number}: missing column {column!r}")
            for key in ("prompt", "query", "response", "system"):
                value = row.get(wanted[key]) if wanted.get(key) else None
                if value is not None and not isinstance(value, str):
                    # LLaMA-Factory joins these as text and drops every row that is not ("Cannot find valid samples")
                    shown, text = (json.dumps(v, ensure_ascii=False)[:40] for v in (value, str(value)))
                    raise UsageError(
                        f"{path}: row {number}: {wanted[key]!r} is {shown}, not text; "
                        f"LLaMA-Factory takes text: write it as {text}"
                    )
            if not str(row[wanted["prompt"]]).strip() or row[wanted["response"]] in (None, ""):
                raise UsageError(f"{path}: row {number}: empty {wanted['prompt']!r} or {wanted['response']!r}")
        return
    if formatting != "sharegpt":
        raise UsageError(f"unknown formatting {formatting!r}: alpaca or sharegpt")
    messages_column = columns.get("messages", SHAREGPT_DEFAULTS["messages"])
    t = {**{k: SHAREGPT_DEFAULTS[k] for k in SHAREGPT_TAGS}, **tags}
    roles = {t["user_tag"], t["assistant_tag"], t["observation_tag"], t["function_tag"], t["system_tag"]}
    for number, row in enumerate(rows, 1):
        messages = row.get(messages_column)
        if not isinstance(messages, list) or not messages:
            raise UsageError(f"{path}: row {number}: {messages_column!r} is not a non-empty list of messages")
        for turn, message in enumerate(messages, 1):
            if not isinstance(message, dict) or t["role_tag"] not in message or t["content_tag"] not in message:
                raise UsageError(
                    f"{path}: row {number}, message {turn}: needs {t['role_tag']!r} and {t['content_tag']!r}"
                )
            if message[t["role_tag"]] not in roles:
                raise UsageError(
                    f"{path}: row {number}, message {turn}: role {message[t['role_tag']]!r} is none of "
                    f"{sorted(roles)} (set the tags)"
                )
        _check_turns(path, number, [m[t["role_tag"]] for m in messages], t)


def _check_turns(path: Path, number: int, roles: list[str], t: dict[str, str]) -> None:
    """LLaMA-Factory trains on (user, assistant) pairs and silently drops a row that breaks them."""
    offset = 1 if roles and roles[0] == t["system_tag"] else 0
    asking, answering = (t["user_tag"], t["observation_tag"]), (t["assistant_tag"], t["function_tag"])
    for index, role in enumerate(roles[offset:]):
        wanted = asking if index % 2 == 0 else answering
        if role not in wanted:
            raise UsageError(
                f"{path}: row {number}, message {index + offset + 1}: {role!r} where a "
                f"{'user' if index % 2 == 0 else 'assistant'} turn belongs ({' or '.join(map(repr, wanted))})"
            )
    if len(roles) - offset == 0 or (len(roles) - offset) % 2:
        raise UsageError(f"{path}: row {number}: no assistant turn answers the last user turn ({t['assistant_tag']!r})")
