"""Frame headers: ``decode_header`` and the limits it keeps.

Headers are small: the biggest describe a model (an entry per array), a roster or a
certificate. ``decode_header`` bounds what one may decode into, not only its bytes: each byte
of msgpack can become a Python object of ~70 (an empty map, a dict), so a 1 MiB header of
empty maps held 72 MB. A header is refused over ``MAX_HEADER`` bytes, ``MAX_HEADER_ITEMS``
values, ``MAX_HEADER_CONTAINERS`` lists and maps, ``MAX_HEADER_DEPTH`` levels, or a list, map
or string longer than its own limit: what one decodes into stays under ~5 MB.
"""

from __future__ import annotations

from functools import partial
from itertools import chain, compress
from operator import is_
from typing import Any

import msgpack

from ..errors import ChannelError, HeaderRefused

__all__ = [
    "MAX_HEADER",
    "MAX_HEADER_CONTAINERS",
    "MAX_HEADER_DEPTH",
    "MAX_HEADER_ITEMS",
    "decode_header",
]

# A 4,096-array model's description (fl.wire's _MAX_ARRAYS) with 2-D shapes and keys of up to
# ~88 bytes; a 100-array one takes ~8 KB, the largest header in the test suite 932 bytes.
MAX_HEADER = 512 * 2**10
MAX_HEADER_ITEMS = 2**16  # values in all, each container's entries counted: ~45k for 4,096 arrays
MAX_HEADER_CONTAINERS = 2**14  # lists and maps in all: ~8.2k for 4,096 arrays (2 per array)
MAX_HEADER_DEPTH = 16  # ours nest 7 deep: frame, header, content, record, arrays, entry, shape
_MAX_LIST = 2 * 4096  # one list's entries: a model's arrays, a frame's segments
_MAX_MAP = 1024  # one map's keys: a roster (<= 32), a config or metric record
_MAX_STRING = 64 * 2**10  # one str or bytes: a certificate, an invite, a reason


class _Budget:
    """What a header may still decode into, spent while msgpack builds it: its hooks run for
    each list and map once its contents exist, so a header over budget stops decoding there,
    before the rest of it is built. They only count (~0.1 us a list or map)."""

    def __init__(self) -> None:
        self.items = MAX_HEADER_ITEMS
        self.containers = MAX_HEADER_CONTAINERS

    def list_hook(self, value: list[Any]) -> list[Any]:
        self.items -= len(value) + 1
        self.containers -= 1
        if self.items < 0 or self.containers < 0:
            self.refuse()
        return value

    def map_hook(self, value: dict[str, Any]) -> dict[str, Any]:
        self.items -= 2 * len(value) + 1
        self.containers -= 1
        if self.items < 0 or self.containers < 0:
            self.refuse()
        return value

    @staticmethod
    def refuse() -> None:
        raise HeaderRefused(
            f"frame header holds over {MAX_HEADER_ITEMS} values "
            f"or {MAX_HEADER_CONTAINERS} lists and maps"
        )


_is_list = partial(is_, list)
_is_dict = partial(is_, dict)


def _check_depth(header: dict[str, Any]) -> None:
    """Refuse a header nested over ``MAX_HEADER_DEPTH`` levels (code that walks a header, or
    repr()s it, recurses). One level at a time, by C-level iterators only: a header's values
    each cost ~0.1 us, however many lists and maps they hold."""
    lists: list[list[Any]] = []
    dicts: list[dict[str, Any]] = [header]
    for _ in range(MAX_HEADER_DEPTH):
        values = [*chain.from_iterable(lists), *chain.from_iterable(map(dict.values, dicts))]
        kinds = list(map(type, values))
        lists = list(compress(values, map(_is_list, kinds)))
        dicts = list(compress(values, map(_is_dict, kinds)))
        if not lists and not dicts:
            return
    raise HeaderRefused(f"frame header nests over {MAX_HEADER_DEPTH} levels deep")


def decode_header(data: bytes) -> dict[str, Any]:
    """A frame header from its msgpack bytes, within the limits above; ``ChannelError`` if
    it is unreadable, over a limit, or not a map."""
    budget = _Budget()
    try:
        header = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=_MAX_STRING,
            max_bin_len=_MAX_STRING,
            max_array_len=_MAX_LIST,
            max_map_len=_MAX_MAP,
            max_ext_len=0,
            list_hook=budget.list_hook,
            object_hook=budget.map_hook,
        )
    except HeaderRefused as exc:
        raise ChannelError(str(exc)) from None
    except (ValueError, msgpack.UnpackException) as exc:  # limits name numbers, never content
        reason = str(exc)[:100] or "nested too deep"
        raise ChannelError(f"unreadable frame header: {type(exc).__name__}: {reason}") from None
    if not isinstance(header, dict):
        raise ChannelError("frame header is not a map")
    try:
        _check_depth(header)
    except HeaderRefused as exc:
        raise ChannelError(str(exc)) from None
    return header
