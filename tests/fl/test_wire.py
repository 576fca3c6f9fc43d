"""Flower records survive our wire codec; malformed descriptions become WireError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from mycelium_p2p.fl.task import initial_arrays
from mycelium_p2p.fl.wire import WireError, decode_content, encode_content


def test_round_trip_keeps_every_record() -> None:
    arrays = initial_arrays()
    content = RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord({"lr": 0.05, "server-round": 3, "name": "x"}),
            "metrics": MetricRecord({"num-examples": 10, "acc": 0.5}),
        }
    )
    records, segments = encode_content(content)
    back = decode_content(records, segments)
    assert list(back.keys()) == ["arrays", "config", "metrics"]
    assert isinstance(back["arrays"], ArrayRecord)
    assert list(back["arrays"].keys()) == list(arrays.keys())
    for key, array in arrays.items():
        got = back["arrays"][key]
        assert (got.dtype, got.shape, got.stype, got.data) == (
            array.dtype,
            tuple(array.shape),
            array.stype,
            array.data,
        )
        assert np.array_equal(got.numpy(), array.numpy())
    assert dict(back["config"]) == dict(content["config"])
    assert dict(back["metrics"]) == dict(content["metrics"])


@pytest.mark.parametrize(
    "records",
    [
        "not a list",
        [["arrays", "a", [["w", "float32", [2], "numpy.ndarray", 5]]]],  # missing segment
        [["arrays", "a", [["w", "float32", [2], "numpy.ndarray"]]]],  # wrong arity
        [["arrays", "a", "not a list"]],
        [[7, "c", {}]],  # record name not a string
        [["x", "?", {}]],  # unknown kind
        [["config", "c", {"bad": object()}]],
    ],
)
def test_malformed_content_is_a_wire_error(records: Any) -> None:
    with pytest.raises(WireError):
        decode_content(records, [b"\x00" * 8])
