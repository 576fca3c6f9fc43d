"""A user's own Flower ClientApp, unmodified: a numpy softmax regression on generated data.

Used as ``--client-app tests.helpers.user_app:app``; ``initial_arrays`` gives the start model.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
calls = {"train": 0, "evaluate": 0}  # observed by the test (one process)


def _data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(int(context.node_id) % 1000)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def initial_arrays() -> ArrayRecord:
    return ArrayRecord(numpy_ndarrays=[np.zeros((2, 2)), np.zeros(2)])


def _probs(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ w + b
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@app.train()
def train(msg: Message, context: Context) -> Message:
    calls["train"] += 1
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    x, y = _data(context)
    for _ in range(20):
        grad = _probs(w, b, x)
        grad[np.arange(len(y)), y] -= 1
        w = w - 0.5 * x.T @ grad / len(y)
        b = b - 0.5 * grad.mean(axis=0)
    content = RecordDict(
        {
            "arrays": ArrayRecord(numpy_ndarrays=[w, b]),
            "metrics": MetricRecord({"num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    calls["evaluate"] += 1
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    x, y = _data(context)
    accuracy = float((_probs(w, b, x).argmax(axis=1) == y).mean())
    content = RecordDict({"metrics": MetricRecord({"accuracy": accuracy, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
