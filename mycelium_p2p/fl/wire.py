"""Flower ``RecordDict`` contents on our channels: a msgpack header plus raw array buffers.

Each ``Array``'s bytes travel as their own frame segment, untouched: no protobuf message
wrapping the whole model, no concatenation. Decoding checks every shape it is given.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ..errors import WireError
from .npy import NpyArray, well_formed

_MAX_RECORDS = 64
_MAX_ARRAYS = 4096


def encode_content(content: RecordDict) -> tuple[list[list[Any]], list[bytes]]:
    """The content as (records description, segments)."""
    records: list[list[Any]] = []
    segments: list[bytes] = []
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            arrays = []
            for key, array in record.items():
                arrays.append([key, array.dtype, list(array.shape), array.stype, len(segments)])
                segments.append(array.data)
            records.append([name, "a", arrays])
        elif isinstance(record, ConfigRecord):
            records.append([name, "c", dict(record)])
        elif isinstance(record, MetricRecord):
            records.append([name, "m", dict(record)])
        else:
            raise WireError(f"record {name!r} of type {type(record).__name__} cannot be sent")
    return records, segments


def decode_content(records: Any, segments: list[bytes]) -> RecordDict:
    """Rebuild a ``RecordDict``; raises ``WireError`` on anything malformed."""
    if not isinstance(records, list) or len(records) > _MAX_RECORDS:
        raise WireError("content must be a list of records")
    out: dict[str, Any] = {}
    try:
        for name, kind, payload in records:
            if not isinstance(name, str):
                raise WireError("record names are strings")
            if kind == "a":
                if not isinstance(payload, list) or len(payload) > _MAX_ARRAYS:
                    raise WireError(f"array record {name!r} is malformed")
                arrays = ArrayRecord()  # filled in place: ArrayRecord(dict) rebuilds every Array
                for key, dtype, shape, stype, index in payload:
                    if not (isinstance(index, int) and 0 <= index < len(segments)):
                        raise WireError(f"array {key!r} points at a missing segment")
                    array = NpyArray(
                        dtype=str(dtype),
                        shape=tuple(int(d) for d in shape),
                        stype=str(stype),
                        data=segments[index],
                    )
                    if any(d < 0 for d in array.shape) or not well_formed(array):
                        raise WireError(f"array {key!r}: its bytes are not its dtype and shape")
                    arrays[str(key)] = array
                out[name] = arrays
            elif kind == "c":
                out[name] = ConfigRecord(payload)
            elif kind == "m":
                out[name] = MetricRecord(payload)
            else:
                raise WireError(f"unknown record kind {kind!r}")
    except WireError:
        raise
    except Exception as exc:  # wrong arity, wrong value types: all the peer's fault
        raise WireError(f"malformed content: {type(exc).__name__}: {exc}") from None
    return RecordDict(out)


def array_signature(content: RecordDict) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
    """Per array record: its keys, dtypes and shapes (to check replies are consistent)."""
    return {
        name: [(key, a.dtype, tuple(a.shape)) for key, a in record.items()]
        for name, record in content.items()
        if isinstance(record, ArrayRecord)
    }
