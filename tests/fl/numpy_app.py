"""A numpy-only Flower ClientApp: logistic regression on generated data (no torch, no sklearn).

Used as ``--client-app tests.fl.numpy_app:app`` (``initial_arrays`` gives the start model).
Every call prints whether torch (or scikit-learn) is loaded in its process, so a test reading a
node's output learns it from the node itself: ``numpy-app: train torch=False sklearn=False``.
"""

from __future__ import annotations

import sys

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

FEATURES = 8
app = ClientApp()


def _data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    """300 points per node, labelled by one hidden hyperplane shared by every node."""
    rng = np.random.default_rng(int(context.node_id) % 10_000)
    x = rng.normal(size=(300, FEATURES))
    y = (x @ np.linspace(-1.0, 1.0, FEATURES) > 0.2).astype(np.float64)
    return x, y


def initial_arrays() -> ArrayRecord:
    """The group's starting model: zero weights and bias."""
    return ArrayRecord(numpy_ndarrays=[np.zeros(FEATURES), np.zeros(1)])


def _report(kind: str) -> None:
    torch, sklearn = "torch" in sys.modules, "sklearn" in sys.modules
    print(f"numpy-app: {kind} torch={torch} sklearn={sklearn}", file=sys.stderr, flush=True)


def _predict(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x @ w + b[0], -30.0, 30.0)))


def _loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@app.train()
def train(msg: Message, context: Context) -> Message:
    _report("train")
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    x, y = _data(context)
    for _ in range(25):  # full-batch gradient descent
        error = _predict(w, b, x) - y
        w = w - 0.5 * x.T @ error / len(y)
        b = b - 0.5 * np.array([error.mean()])
    metrics = MetricRecord({"train_loss": _loss(_predict(w, b, x), y), "num-examples": len(y)})
    content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=[w, b]), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _report("evaluate")
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    x, y = _data(context)
    p = _predict(w, b, x)
    metrics = {"eval_loss": _loss(p, y), "eval_acc": float(((p > 0.5) == y).mean())}
    content = RecordDict({"metrics": MetricRecord({**metrics, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
