"""Which keys LLaMA-Factory accepts for a command, and values of the right type for them.

Read from LLaMA-Factory's own argument dataclasses (the ones its parser builds),
so a key it does not know, or a value of the wrong type, is caught before a
subprocess starts and loads a model. lfkit's own steps (eval, report) and the
one-shot chat take a few keys of their own on top.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import types
import typing
from typing import Any

from lfkit.errors import UsageError
from lfkit.flags import NO, YES
from lfkit.installed_facts import llamafactory_files, remembered
from lfkit.lf_versions import describe, newer_argument

# Keys lfkit's side of a step reads; never passed to LLaMA-Factory's parser.
LAUNCH_KEYS: dict[str, Any] = {
    "nproc_per_node": int,
    "nnodes": int,
    "node_rank": int,
    "master_addr": str,
    "master_port": int,
}
LFKIT_KEYS: dict[str, dict[str, Any]] = {
    # how many workers, through LLaMA-Factory's torchrun launcher; the device memory to plan for
    "train": {**LAUNCH_KEYS, "gpu_memory": str},
    "export": {},
    "chat": {"prompt": str, "seed": int},
    "eval": {"batch_size": int, "seed": int},
    "report": {"before": str, "after": str, "train": str, "summary_dir": str},
}


@functools.lru_cache(maxsize=None)
def _dataclasses(command: str) -> tuple[type, ...]:
    from llamafactory.hparams import (
        DataArguments,
        FinetuningArguments,
        GeneratingArguments,
        ModelArguments,
        TrainingArguments,
    )

    if command == "train":
        return (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments)
    if command in ("export", "chat", "eval"):
        return (ModelArguments, DataArguments, FinetuningArguments, GeneratingArguments)
    return ()


def _kind(tp: Any) -> Any:
    """A JSON description of an annotation, as much of it as the value checks below use.

    "any" | "none" | "bool" | "int" | "float" | "str" | "dict" | {"union": [...]} |
    {"literal": [...]} | {"enum": [values]} | {"list": kind} | {"other": name}
    """
    if tp is Any or tp is None:
        return "any"
    if tp is type(None):
        return "none"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if str in options and any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
            # transformers' `SchedulerType | str` and the like: the text must still name a member.
            options = tuple(o for o in options if o is not str)
        return {"union": [_kind(o) for o in options]}
    if origin is typing.Literal:
        return {"literal": list(typing.get_args(tp))}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value if isinstance(m.value, (str, int, float, bool)) else str(m.value) for m in tp]}
    for simple in (bool, int, float, str, dict):
        if tp is simple:
            return simple.__name__
    if origin is dict:
        return "dict"
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return {"list": _kind(inner)}
    return {"other": getattr(tp, "__name__", str(tp))}


def _read_dataclasses(command: str) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for cls in _dataclasses(command):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: take the raw ones
            hints = {}
        for f in dataclasses.fields(cls):
            if f.init:
                keys.setdefault(f.name, _kind(hints.get(f.name, f.type)))
    return keys


@functools.lru_cache(maxsize=None)
def _lf_keys(command: str) -> dict[str, Any]:
    """LLaMA-Factory's keys for ``command``: importing its argument classes pulls in torch,
    transformers and peft, so they are read once per installed version (``installed_facts``)."""
    every = remembered(
        "llamafactory-args",
        llamafactory_files(["hparams/*.py"]),
        lambda: {name: _read_dataclasses(name) for name in LFKIT_KEYS},
    )
    return every[command]


@functools.lru_cache(maxsize=None)
def known_keys(command: str) -> dict[str, Any]:
    """key -> kind (see ``_kind``) for ``command``."""
    keys = dict(_lf_keys(command))
    keys.update({key: _kind(tp) for key, tp in LFKIT_KEYS.get(command, {}).items()})
    return keys


def lfkit_keys(command: str) -> set[str]:
    return set(LFKIT_KEYS.get(command, {}))


def check_key(command: str, key: str, where: str) -> Any:
    """The kind of ``key`` for ``command``; a UsageError naming the closest keys if unknown."""
    keys = known_keys(command)
    if key in keys:
        return keys[key]
    later = newer_argument(key)
    if later:
        raise UsageError(f"{where}: {describe()}'s {command} has no argument {key!r}; {later} has it")
    close = difflib.get_close_matches(key, list(keys), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"{where}: LLaMA-Factory's {command} does not know the key {key!r}{hint}")


# --- values ------------------------------------------------------------------------


class _Mismatch(Exception):
    pass


def _describe(kind: Any) -> str:
    if isinstance(kind, dict) and "union" in kind:
        return " or ".join(_describe(k) for k in kind["union"] if k != "none")
    if isinstance(kind, dict) and "literal" in kind:
        return "one of " + ", ".join(map(str, kind["literal"]))
    if isinstance(kind, dict) and "enum" in kind:
        return "one of " + ", ".join(map(str, kind["enum"]))
    if isinstance(kind, dict) and "list" in kind:
        return "a list"
    if isinstance(kind, dict):
        return str(kind.get("other"))
    names = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text", "dict": "a mapping"}
    return names.get(kind, kind)


def _coerce(value: Any, kind: Any) -> Any:  # noqa: C901 - one branch per kind of annotation
    if isinstance(value, enum.Enum):
        value = value.value
    if kind == "any":
        return value
    if kind == "none":
        if value is None or value == "null":
            return None
        raise _Mismatch
    if isinstance(kind, dict) and "union" in kind:
        options = kind["union"]
        if (value is None or value == "null") and "none" in options:
            return None
        # Exact types first, so "5" stays text where text is allowed.
        for option in sorted(options, key=lambda o: o != "str"):
            if option == "none":
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if isinstance(kind, dict) and "literal" in kind:
        for choice in kind["literal"]:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
            if isinstance(choice, bool) and isinstance(value, str) and value.lower() in (YES | NO):
                if (value.lower() in YES) == choice:
                    return choice
        raise _Mismatch
    if isinstance(kind, dict) and "enum" in kind:
        for member in kind["enum"]:
            if value == member or str(value) == str(member):
                return member
        raise _Mismatch
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in YES | NO:
            return value.lower() in YES
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if kind == "int":
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if kind == "float":
        # A whole number stays whole: transformers' logging_steps / save_steps are floats that
        # mean a step count when >= 1, and an exported YAML should say 10, not 10.0.
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, str):
            if value.strip().lstrip("+").isdigit():
                return int(value)
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if kind == "str":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if kind == "dict":
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                raise _Mismatch from None
            if isinstance(parsed, dict):
                return parsed
        raise _Mismatch
    if isinstance(kind, dict) and "list" in kind:
        items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
        if items is None:
            raise _Mismatch
        return [_coerce(item.strip() if isinstance(item, str) else item, kind["list"]) for item in items]
    return value  # a type we cannot judge (a config object, a dtype): LLaMA-Factory decides


def coerce(command: str, key: str, value: Any, where: str) -> Any:
    """``value`` as LLaMA-Factory's ``key`` wants it; a one-line UsageError if it cannot be."""
    kind = check_key(command, key, where)
    try:
        return _coerce(value, kind)
    except _Mismatch:
        raise UsageError(f"{where}: {key}={value!r} is not {_describe(kind)}") from None
