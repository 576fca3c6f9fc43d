"""A tiny strict schema language for record bodies: exact key sets, bounded types, no surprises.

Each field type checks one decoded msgpack value and raises ``MalformedRecord`` naming the
offending path. Schemas are immutable values, so they can be module constants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedRecord


class Field:
    """One value's shape. ``check`` raises ``MalformedRecord`` or returns None."""

    def check(self, value: Any, path: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Field):
    max_len: int
    choices: frozenset[str] | None = None
    min_len: int = 0

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise MalformedRecord(f"{path}: expected a string, got {type(value).__name__}")
        if not self.min_len <= len(value) <= self.max_len:
            raise MalformedRecord(
                f"{path}: length {len(value)} outside {self.min_len}..{self.max_len}"
            )
        if self.choices is not None and value not in self.choices:
            raise MalformedRecord(f"{path}: {value!r} is not one of {sorted(self.choices)}")


@dataclass(frozen=True)
class Int(Field):
    lo: int = 0
    hi: int = 2**63 - 1

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedRecord(f"{path}: expected an integer, got {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise MalformedRecord(f"{path}: {value} outside {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Float(Field):
    lo: float = -math.inf
    hi: float = math.inf

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, (float, int)) or isinstance(value, bool):
            raise MalformedRecord(f"{path}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            raise MalformedRecord(f"{path}: {value} outside {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Bool(Field):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise MalformedRecord(f"{path}: expected a boolean, got {type(value).__name__}")


@dataclass(frozen=True)
class Bytes(Field):
    size: int

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes) or len(value) != self.size:
            got = len(value) if isinstance(value, bytes) else type(value).__name__
            raise MalformedRecord(f"{path}: expected {self.size} bytes, got {got}")


@dataclass(frozen=True)
class Blob(Field):
    """Bytes of any length up to ``max_len``."""

    max_len: int

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes) or len(value) > self.max_len:
            got = len(value) if isinstance(value, bytes) else type(value).__name__
            raise MalformedRecord(f"{path}: expected at most {self.max_len} bytes, got {got}")


@dataclass(frozen=True)
class Tuple(Field):
    """A fixed-length array whose items have the given shapes."""

    items: tuple[Field, ...]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise MalformedRecord(f"{path}: expected an array of {len(self.items)} items")
        for i, (item, field) in enumerate(zip(value, self.items, strict=True)):
            field.check(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Map(Field):
    """A map with exactly these string keys."""

    fields: Mapping[str, Field]

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise MalformedRecord(f"{path}: expected a map, got {type(value).__name__}")
        keys = set(value)
        expected = set(self.fields)
        if keys != expected:
            missing = sorted(expected - keys)
            extra = sorted(map(str, keys - expected))
            raise MalformedRecord(f"{path}: missing fields {missing}, unexpected fields {extra}")
        for name, field in self.fields.items():
            field.check(value[name], f"{path}.{name}")

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.fields)))
