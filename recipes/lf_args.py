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


@functools.lru_cache(maxsize=None)
def known_keys(command: str) -> dict[str, Any]:
    """key -> type for ``command``."""
    keys: dict[str, Any] = {}
    for cls in _dataclasses(command):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: take the raw ones
            hints = {}
        for f in dataclasses.fields(cls):
            if f.init:
                keys.setdefault(f.name, hints.get(f.name, f.type))
    keys.update(LFKIT_KEYS.get(command, {}))
    return keys


def lfkit_keys(command: str) -> set[str]:
    return set(LFKIT_KEYS.get(command, {}))


def check_key(command: str, key: str, where: str) -> Any:
    """The type of ``key`` for ``command``; a UsageError naming the closest keys if unknown."""
    keys = known_keys(command)
    if key in keys:
        return keys[key]
    close = difflib.get_close_matches(key, list(keys), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"{where}: LLaMA-Factory's {command} does not know the key {key!r}{hint}")


# --- values ------------------------------------------------------------------------

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Mismatch(Exception):
    pass


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if str in options and any(isinstance(o, type) and issubclass(o, enum.Enum) for o in options):
            options.remove(str)
        return " or ".join(_describe(a) for a in options)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", dict: "a mapping"}
    if tp in names:
        return names[tp]
    if origin is list:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:  # noqa: C901 - one branch per kind of annotation
    if tp is Any or tp is None:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        enums = [o for o in options if isinstance(o, type) and issubclass(o, enum.Enum)]
        if enums and str in options:
            # transformers' `SchedulerType | str` and the like: the text must still name a member.
            options = tuple(o for o in options if o is not str)
            tp = typing.Union[options]  # noqa: UP007 - built from a tuple
        if value is None or value == "null":
            if type(None) in options:
                return None
        # Exact types first, so "5" stays text where text is allowed.
        for option in sorted(options, key=lambda o: o is not str):
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        for choice in typing.get_args(tp):
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
            if isinstance(choice, bool) and isinstance(value, str) and value.lower() in (_TRUE | _FALSE):
                if (value.lower() in _TRUE) == choice:
                    return choice
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or value == member or str(value) == str(member.value):
                return member.value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if tp is int:
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
    if tp is float:
        # A whole number stays whole: transformers' logging_steps / save_steps are floats that
        # mean a step count when >= 1, and an exported YAML should say 10, not 10.0.
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, str):
            if value.strip().lstrip("+").isdigit():
                return int(value)
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if tp is dict or origin is dict:
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
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
        if items is None:
            raise _Mismatch
        return [_coerce(item.strip() if isinstance(item, str) else item, inner) for item in items]
    return value  # a type we cannot judge (a config object, a dtype): LLaMA-Factory decides


def coerce(command: str, key: str, value: Any, where: str) -> Any:
    """``value`` as LLaMA-Factory's ``key`` wants it; a one-line UsageError if it cannot be."""
    tp = check_key(command, key, where)
    try:
        return _coerce(value, tp)
    except _Mismatch:
        raise UsageError(f"{where}: {key}={value!r} is not {_describe(tp)}") from None
