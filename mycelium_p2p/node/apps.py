"""Which ClientApp a node runs, with what node config, and its group's starting model.

Three sources, in this order: a Flower App (``--app``, run in the node's process), a ClientApp
of the user's (``--client-app``, whose module also defines ``initial_arrays``), or the default
digits task. Bad data or a bad app fails here, at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp

from ..errors import ConfigError
from ..fl.app import FlowerApp, load_flower_app
from ..fl.client import load_client_app
from .config import FlSettings

Initial = Callable[[], ArrayRecord]


def flower_app_of(c: FlSettings) -> FlowerApp | None:
    """The Flower App of ``--app`` (None without one); it runs in this process."""
    if not c.app:
        return None
    if c.client_app:
        raise ConfigError("--app and --client-app exclude each other")
    if c.isolation != "thread":
        raise ConfigError("--app runs its ClientApp in a thread (--isolation thread)")
    return load_flower_app(c.app, c.run_config, c.app_node_config)


def app_node_config(flower_app: FlowerApp | None, c: FlSettings, seed: int) -> dict[str, Any]:
    """The node config the ClientApp reads: the Flower App's, else our data settings."""
    if flower_app is not None:
        return dict(flower_app.node_config)
    return {
        "data-shard": c.data_shard,
        "domain": c.domain,
        "shift": c.shift,
        "data-file": c.data_file or "",
        "seed": seed,
    }


def load_task(flower_app: FlowerApp | None, c: FlSettings, seed: int) -> tuple[ClientApp, Initial]:
    """The ClientApp and the group's starting model; bad data fails here, at start."""
    if flower_app is not None:
        start = flower_app.initial
        return flower_app.client_app, lambda: start
    if c.client_app:
        app = load_client_app(c.client_app)
        module = __import__(c.client_app.partition(":")[0], fromlist=["initial_arrays"])
        made: Initial | None = getattr(module, "initial_arrays", None)
        if not callable(made):
            raise ConfigError(
                f"--client-app {c.client_app}: its module must also define "
                "initial_arrays() -> ArrayRecord (the group's starting model)"
            )
        return app, made
    from ..fl import task as digits  # torch: only nodes running the default task load it

    if c.data_file:
        data = digits.load_array_file(c.data_file, seed=seed)
    else:
        data = digits.load_digits_task(
            digits.parse_shard(c.data_shard), c.domain, shift=c.shift, seed=seed
        )
    features, classes = data.num_features, data.num_classes
    return digits.make_client_app(), lambda: digits.initial_arrays(features, classes)
