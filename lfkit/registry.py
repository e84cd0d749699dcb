"""A name -> object table that remembers which plugin registered each entry."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def valid_name(name: object) -> bool:
    """Letters, digits, '_', '-', '.', starting with a letter or digit: safe as a file and dataset name."""
    return isinstance(name, str) and bool(_NAME.match(name))


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    plugin: str


class Registry(Generic[T]):
    def __init__(self, kind: str, check: Callable[[Any], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, plugin: str) -> None:
        if not valid_name(name):
            raise ValueError(f"invalid {self.kind} name {name!r}: letters, digits, '_', '-', '.'")
        if self._check is not None:
            self._check(value)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered by {self._entries[name].plugin}")
        self._entries[name] = Entry(name, value, plugin)

    def get(self, name: str) -> Entry[T] | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def in_registration_order(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
