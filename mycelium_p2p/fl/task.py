"""The default learning task: an MLP (torch) on 8x8 digits, or on a user's own array file.

The data side lives in ``fl.data`` (numpy only; re-exported here). This module imports torch, so
only nodes running the default task (and their worker processes) import it.
``make_client_app`` wraps it all in a Flower message-API ``ClientApp``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..errors import DataError
from .data import (
    Dataset,
    load_array_file,
    load_digits_task,
    parse_shard,
    permute_labels,
    rotate,
)
from .npy import from_ndarray, to_ndarray

__all__ = [
    "MLP",
    "DataError",
    "Dataset",
    "evaluate",
    "initial_arrays",
    "load_array_file",
    "load_arrays",
    "load_digits_task",
    "make_client_app",
    "model_arrays",
    "parse_shard",
    "permute_labels",
    "rotate",
    "train_local",
]


class MLP(torch.nn.Module):
    """Two hidden ReLU layers; small enough to train in seconds on a CPU."""

    def __init__(self, num_features: int = 64, num_classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(num_features, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(x)  # Module.__call__ is typed Any
        return logits


def train_local(
    model: torch.nn.Module,
    data: Dataset,
    *,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
    proximal_mu: float = 0.0,
) -> float:
    """SGD on the training split; the mean cross-entropy of the last epoch.

    With ``proximal_mu`` > 0 the FedProx term pulls the weights towards those the call started
    from (the global model), limiting drift on skewed local data. The returned loss leaves that
    term out so it stays comparable across ``proximal_mu`` values.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        total = 0.0
        for batch in torch.split(torch.randperm(len(y), generator=generator), batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            objective = loss
            if proximal_mu > 0:
                drift = sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                objective = loss + proximal_mu / 2 * drift
            torch.autograd.backward(objective)  # what objective.backward() does (untyped in torch)
            optimizer.step()
            total += loss.item() * len(batch)
    return total / len(y)


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``x``, ``y``."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on zero samples")
    labels = torch.as_tensor(y, dtype=torch.int64)
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32))
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return loss, accuracy


def model_arrays(model: torch.nn.Module) -> ArrayRecord:
    """The model's weights as a Flower ``ArrayRecord``."""
    record = ArrayRecord()  # filled in place: ArrayRecord(dict) would build every Array twice
    for key, tensor in model.state_dict().items():
        record[key] = from_ndarray(tensor.detach().cpu().numpy())
    return record


def load_arrays(model: torch.nn.Module, arrays: ArrayRecord) -> None:
    """Copy weights into ``model`` in place; ``ValueError``, and ``model`` untouched, if their
    names or shapes do not fit it. (``load_state_dict`` would do the same copies at several
    times the cost: a ClientApp loads a model for every message.)"""
    expected = model.state_dict()  # tensors sharing the model's storage
    given, wanted = set(arrays.keys()), set(expected.keys())
    if given != wanted:
        missing, extra = wanted - given, given - wanted
        raise ValueError(
            f"arrays do not fit the model: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    sources = {key: to_ndarray(arrays[key]) for key in expected}
    for key, tensor in expected.items():
        if sources[key].shape != tuple(tensor.shape):
            raise ValueError(
                f"arrays do not fit the model: {key!r} has shape "
                f"{sources[key].shape}, the model needs {tuple(tensor.shape)}"
            )
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(torch.from_numpy(sources[key]))


def _node_config_loader() -> Callable[[Context], Dataset]:
    """Load data as ``context.node_config`` says, once per distinct configuration."""
    cache: dict[tuple[str, int, str, str, int], Dataset] = {}

    def load(context: Context) -> Dataset:
        cfg = context.node_config
        key = (
            str(cfg.get("data-shard", "0/1")),
            int(cfg.get("domain", 0)),
            str(cfg.get("shift", "rotate")),
            str(cfg.get("data-file", "")),
            int(cfg.get("seed", 0)),
        )
        if key not in cache:
            shard, domain, shift, data_file, seed = key
            cache[key] = (
                load_array_file(data_file, seed=seed)
                if data_file
                else load_digits_task(parse_shard(shard), domain, shift=shift, seed=seed)
            )
        return cache[key]

    return load


def _scalar(config: ConfigRecord, key: str, default: float) -> float | str | bytes:
    """``config[key]`` (or ``default``), for ``int()`` or ``float()``: a list is refused."""
    value = config.get(key, default)
    if isinstance(value, list):
        raise TypeError(f"train config {key}={value!r} is a list, not a number")
    return value


def make_client_app(load: Callable[[Context], Dataset] | None = None) -> ClientApp:
    """The default ``ClientApp``: train and evaluate the MLP on ``load(context)``'s data."""
    load_data = load or _node_config_loader()
    app = ClientApp()
    # Every message brings all the weights, so a model is built (and randomly initialised) once
    # per thread and shape, then only loaded: one per node, since a node calls from one thread.
    models = threading.local()

    def receive(msg: Message, context: Context) -> tuple[Dataset, MLP]:
        data = load_data(context)
        cache: dict[tuple[int, int], MLP] = models.__dict__.setdefault("by_shape", {})
        shape = (data.num_features, data.num_classes)
        if shape not in cache:
            cache[shape] = MLP(*shape)
        model = cache[shape]
        # load_arrays refuses anything but this model's arrays (a record of another type too)
        load_arrays(model, cast(ArrayRecord, msg.content["arrays"]))
        return data, model

    @app.train()
    def handle_train(msg: Message, context: Context) -> Message:
        data, model = receive(msg, context)
        # a ConfigRecord only: those are what a member holds to its TrainCaps (bound_content)
        config = msg.content.config_records.get("config", ConfigRecord())
        # Fresh shuffles every round, reproducible per node seed. A group leader runs Flower
        # one round at a time (server-round is always 1) and sends the group round.
        rnd = config.get("group-round", config.get("server-round", 0))
        rnd = rnd if isinstance(rnd, int) and not isinstance(rnd, bool) else 0  # from a peer
        seed = np.random.SeedSequence(
            [int(context.node_config.get("seed", 0)), rnd % 2**32]
        ).generate_state(1)[0]
        loss = train_local(
            model,
            data,
            epochs=int(_scalar(config, "local-epochs", 1)),
            lr=float(_scalar(config, "lr", 0.05)),
            batch_size=int(_scalar(config, "batch-size", 32)),
            seed=int(seed),
            proximal_mu=float(_scalar(config, "proximal-mu", 0.0)),
        )
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(data.y_train)})
        return Message(
            RecordDict({"arrays": model_arrays(model), "metrics": metrics}), reply_to=msg
        )

    @app.evaluate()
    def handle_evaluate(msg: Message, context: Context) -> Message:
        data, model = receive(msg, context)
        loss, accuracy = evaluate(model, data.x_test, data.y_test)
        metrics = MetricRecord(
            {"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(data.y_test)}
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def initial_arrays(num_features: int = 64, num_classes: int = 10, seed: int = 0) -> ArrayRecord:
    """Freshly initialised MLP weights, the same for the same seed."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG alone
        torch.manual_seed(seed)
        return model_arrays(MLP(num_features, num_classes))
