"""A ClientApp whose training holds the GIL for a long time (``MYC_GIL_HOLD`` seconds, 3 by
default): one C call, ``sum(range(n))``, that never lets another thread of its process run.

Used as ``--client-app tests.helpers.gil_app:app``; ``initial_arrays`` gives the start model.
"""

from __future__ import annotations

import os
import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
_rate: list[float] = []  # sum(range(n)) additions per second here, measured once


def initial_arrays() -> ArrayRecord:
    return ArrayRecord(numpy_ndarrays=[np.zeros(4)])


def _hold(seconds: float) -> None:
    if not _rate:
        start = time.perf_counter()
        sum(range(1_000_000))
        _rate.append(1_000_000 / (time.perf_counter() - start))
    sum(range(int(seconds * _rate[0])))


@app.train()
def train(msg: Message, context: Context) -> Message:
    _hold(float(os.environ.get("MYC_GIL_HOLD", "3")))
    content = RecordDict(
        {"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 10})}
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"accuracy": 0.5, "num-examples": 10})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
