"""Our Array <-> numpy conversions give exactly what Flower's own (np.save / np.load) give."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flwr.app import Array
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mycelium_p2p.fl.npy import from_ndarray, to_ndarray

DTYPES = st.sampled_from(
    ["<f4", ">f4", "<f8", "<f2", "<i8", ">i2", "u1", "i1", "|b1", "<c8", "<u4", ">c16"]
)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(DTYPES.map(np.dtype), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0)))
def test_same_bytes_and_arrays_as_flower(x: np.ndarray) -> None:
    ours, flowers = from_ndarray(x), Array.from_numpy_ndarray(x)
    assert (ours.dtype, ours.shape, ours.stype, ours.data) == (
        flowers.dtype,
        flowers.shape,
        flowers.stype,
        flowers.data,
    )
    back = to_ndarray(flowers)
    assert same(back, flowers.numpy()) and back.flags.writeable and back.flags.owndata


@pytest.mark.parametrize(
    "x",
    [
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),  # fortran_order header
        np.arange(24, dtype=np.int64).reshape(4, 6)[::2, 1::2],  # not contiguous
        np.zeros(3, dtype=[("a", "<f4"), ("b", "<i2")]),  # structured
        np.array(["ab", "c"]),  # unicode
    ],
)
def test_other_layouts_and_dtypes_match_flower_too(x: np.ndarray) -> None:
    ours, flowers = from_ndarray(x), Array.from_numpy_ndarray(x)
    assert ours.data == flowers.data
    assert same(to_ndarray(flowers), flowers.numpy())


def test_a_header_written_differently_is_parsed_by_numpy() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = io.BytesIO()
    np.lib.format.write_array(out, x, version=(2, 0))  # a valid file, not np.save's header
    array = Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray", data=out.getvalue())
    assert same(to_ndarray(array), x)


def test_fields_that_disagree_with_the_data_get_numpy_s_answer() -> None:
    """The header inside the bytes decides, as with ``Array.numpy()``."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = Array.from_numpy_ndarray(x).data
    for dtype, shape in (("float64", (2, 3)), ("float32", (3, 2)), ("float32", (6,))):
        array = Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=data)
        assert same(to_ndarray(array), x)


def test_truncated_data_fails_like_numpy() -> None:
    data = Array.from_numpy_ndarray(np.arange(6, dtype=np.float32)).data[:-4]
    array = Array(dtype="float32", shape=(6,), stype="numpy.ndarray", data=data)
    with pytest.raises(ValueError):
        array.numpy()
    with pytest.raises(ValueError):
        to_ndarray(array)


def test_plain_arrays_skip_np_save_and_np_load(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).random((64, 10), dtype=np.float32)
    expected = Array.from_numpy_ndarray(x)

    def refuse(*args: object) -> None:
        raise AssertionError("went through np.save / np.load")

    monkeypatch.setattr(np, "save", refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert from_ndarray(x).data == expected.data
    assert same(to_ndarray(expected), x)


def test_decoded_arrays_feed_a_stock_strategy_the_same_numbers() -> None:
    """Replies decoded from the wire are ``NpyArray``s: Flower's own FedAvg aggregation (which
    calls ``Array.numpy()``) gets the same arrays, and the records compare equal."""
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from mycelium_p2p.fl.npy import NpyArray
    from mycelium_p2p.fl.wire import decode_content, encode_content

    rng = np.random.default_rng(0)
    replies = [
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {"w": Array(rng.normal(size=(3, 4)).astype(np.float32)), "b": Array(x)}
                ),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        for n, x in ((10, np.arange(4.0).reshape(2, 2)), (30, np.asfortranarray(np.ones((2, 2)))))
    ]
    decoded = [decode_content(*encode_content(r)) for r in replies]
    assert all(isinstance(a, NpyArray) for r in decoded for a in r["arrays"].values())
    assert decoded == replies
    for d, r in zip(decoded, replies, strict=True):
        for key in ("w", "b"):
            got = d["arrays"][key].numpy()
            assert same(got, r["arrays"][key].numpy()) and got.flags.writeable
    ours = aggregate_arrayrecords(decoded, "num-examples")
    flowers = aggregate_arrayrecords(replies, "num-examples")
    assert ours == flowers
