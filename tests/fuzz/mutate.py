"""Structure-aware mutations: valid encodings bent the ways a hostile peer bends them.

Two layers, used together by every fuzz target:

- ``mutated_bytes(seeds)``: a valid encoding with a few byte-level edits (bit flips, byte
  overwrites, truncation, insertion, deletion, duplication of a span), or random bytes;
- ``mutated_tree(value)``: a decoded msgpack value with one node replaced by something nasty
  (NaN, infinities, huge and negative integers, a value of another type, a deep nest, a long
  string or list, an ext type) or a map key added or removed, to be re-encoded by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack
from hypothesis import strategies as st

NASTY_NUMBERS: tuple[Any, ...] = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    -1,
    0,
    1,
)


def _deep(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


NASTY_VALUES: tuple[Any, ...] = (
    *NASTY_NUMBERS,
    None,
    True,
    False,
    "",
    "\x00\n\x1b[2J",
    "é" * 200,
    "1" * 5000,
    b"",
    b"\x00" * 32,
    b"\xff" * 5000,
    [],
    {},
    {"": None},
    list(range(300)),
    _deep(40),
    _deep(200),
    msgpack.ExtType(1, b"x"),
)


_NASTY = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**64), 2**64),
    st.text(max_size=40),
    st.binary(max_size=80),
)


def nasty_values() -> st.SearchStrategy[Any]:
    """Values that break parsers: non-finite and out-of-range numbers, wrong types, bulk."""
    return _NASTY


def pick(draw: st.DrawFn, items: Sequence[Any]) -> Any:
    """One of ``items`` (cheaper than ``sampled_from`` on a list built per draw)."""
    return items[draw(st.integers(0, len(items) - 1))]


_BYTE_OPS = ("flip", "set", "truncate", "insert", "delete", "duplicate")


@st.composite
def mutated_bytes(draw: st.DrawFn, seeds: Sequence[bytes], *, max_random: int = 600) -> bytes:
    """One of ``seeds`` with 1-4 byte-level edits, one unchanged, or random bytes."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=max_random))
    data = bytearray(pick(draw, seeds))
    if choice == 1:
        return bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(_BYTE_OPS))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCB, 0xDD, 0xFF]))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


def _paths(value: Any, path: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    """Every position in a decoded msgpack tree (the root is ``()``)."""
    out = [path]
    if depth > 8:
        return out
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out += _paths(item, (*path, i), depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key), depth + 1)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _swap_type(value: Any) -> Any:
    """The same content as another type: an int as a float or string, bytes as str..."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return [float(value), str(value), value > 0][value % 3]
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (list, tuple)):
        return dict(enumerate(value))
    if isinstance(value, dict):
        return list(value.values())
    return "swapped"


@st.composite
def mutated_tree(draw: st.DrawFn, value: Any) -> Any:
    """A copy of ``value`` with one node replaced, retyped, or (in a map/list) added or removed."""
    tree = _copy(value)
    path = pick(draw, _paths(tree))
    op = draw(st.sampled_from(("replace", "swap", "drop", "add", "extend")))
    if not path:
        return draw(nasty_values()) if op == "replace" else _swap_type(tree)
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if op == "replace":
        parent[last] = draw(nasty_values())
    elif op == "swap":
        parent[last] = _swap_type(parent[last])
    elif op == "drop":
        del parent[last]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["x", "", "v", "body", "seg", 7]))] = draw(nasty_values())
    elif isinstance(parent, list):
        parent.append(draw(nasty_values()))
    else:
        parent[last] = draw(nasty_values())
    return tree


def pack(value: Any) -> bytes:
    """``value`` as msgpack, whatever it holds (NaN, ext types, 64 levels deep)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@st.composite
def mutated_msgpack(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A msgpack seed edited as a tree (then re-encoded) or as bytes."""
    if draw(st.booleans()):
        seed = pick(draw, seeds)
        try:
            return pack(draw(mutated_tree(unpack(seed))))
        except (ValueError, TypeError, OverflowError):  # e.g. an int over 64 bits
            return seed
    return draw(mutated_bytes(seeds))
