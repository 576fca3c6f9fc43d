"""Flower ``Array`` <-> numpy without a ``np.save`` / ``np.load`` per array.

A Flower ``Array`` holds its array as ``.npy`` bytes, and ``Array.numpy()`` /
``Array.from_numpy_ndarray`` format or parse that file's text header every time (about 100 us
an array: most of what converting a small model costs). A C-ordered array's header depends only
on its dtype and shape, so we build it once per (dtype, shape) and write the exact bytes
``np.save`` writes; reading, an array whose header is byte for byte that header is taken
straight from the buffer (and ``NpyArray``, the ``Array`` our wire decoding builds, does that
in its own ``numpy()``). Anything else (Fortran order, object or structured dtypes, another
``stype``, a header written some other way) goes through Flower's own methods.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from flwr.app import Array
from flwr.common.constant import SType
from numpy.lib import format as npy_format

_PLAIN_KINDS = "biufc"  # bool, integers, floats, complex: no pickling, no fields


@functools.lru_cache(maxsize=256)  # peers choose shapes: bounded
def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    npy_format.write_array_header_1_0(
        out, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return out.getvalue()


def _plain(array: Array) -> tuple[np.dtype, tuple[int, ...], bytes] | None:
    """The dtype, shape and exact header of an array ``np.save`` could have written with our
    fast path, or None."""
    if array.stype != SType.NUMPY:
        return None
    try:
        dtype = np.dtype(array.dtype)
    except TypeError:
        return None
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None:
        return None
    shape = tuple(int(d) for d in array.shape)
    return dtype, shape, _header(dtype, shape)


def well_formed(array: Array) -> bool:
    """Whether ``array.data`` is exactly the ``.npy`` bytes of its dtype and shape (or, for an
    array our fast path does not cover, parses to that dtype and shape). Peers' arrays are
    checked with this before anything reads them."""
    plain = _plain(array)
    if plain is not None:
        dtype, shape, header = plain
        size = len(header) + dtype.itemsize * math.prod(shape)
        if len(array.data) == size and array.data.startswith(header):
            return True
    try:
        value = Array.numpy(array)
    except Exception:  # np.load raises a zoo of types on hostile bytes
        return False
    return value.shape == tuple(array.shape) and str(value.dtype) == array.dtype


def to_ndarray(array: Array) -> np.ndarray:
    """What ``array.numpy()`` returns (a new, writable array), without parsing its header."""
    if array.stype == SType.NUMPY:
        try:
            dtype = np.dtype(array.dtype)
        except TypeError:
            dtype = None
        if dtype is not None and dtype.kind in _PLAIN_KINDS and dtype.fields is None:
            shape = tuple(int(d) for d in array.shape)
            header = _header(dtype, shape)
            data = array.data
            if len(data) == len(header) + dtype.itemsize * math.prod(shape) and data.startswith(
                header
            ):
                flat = np.frombuffer(data, dtype=dtype, offset=len(header))
                copied: np.ndarray = flat.reshape(shape).copy()
                return copied
    return Array.numpy(array)


class NpyArray(Array):
    """The ``Array`` our wire decoding builds: ``numpy()`` is ``to_ndarray``, so code that
    only knows Flower's API (a stock strategy averaging replies) skips the header parse too."""

    def numpy(self) -> np.ndarray:
        return to_ndarray(self)

    def __eq__(self, other: object) -> bool:  # equal to a plain Array with the same contents
        if not isinstance(other, Array):
            return NotImplemented
        return (self.dtype, list(self.shape), self.stype, self.data) == (
            other.dtype,
            list(other.shape),
            other.stype,
            other.data,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like Array


def from_ndarray(ndarray: np.ndarray) -> Array:
    """What ``Array.from_numpy_ndarray(ndarray)`` returns (the same bytes), without ``np.save``."""
    dtype = ndarray.dtype
    fortran_only = ndarray.flags.f_contiguous and not ndarray.flags.c_contiguous
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or fortran_only:
        return Array.from_numpy_ndarray(ndarray)
    shape = tuple(int(d) for d in ndarray.shape)
    return Array(
        dtype=str(dtype),
        shape=shape,
        stype=SType.NUMPY,
        data=_header(dtype, shape) + ndarray.tobytes(),
    )
