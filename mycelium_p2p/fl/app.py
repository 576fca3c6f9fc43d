"""A Flower App directory (as ``flwr new`` lays it out), loaded the way Flower loads it.

``pyproject.toml`` names the app (``[tool.flwr.app] publisher``, ``[project] name/version``),
its components (``[tool.flwr.app.components] serverapp/clientapp = "module:attr"``) and its run
config (``[tool.flwr.app.config]``). Components are imported with the app's directory on
``sys.path`` (Flower's own ``load_app``); the app's dependencies are the user's to install.
``--run-config``/``--node-config`` strings use Flower's syntax and parser
(``parse_config_args``); run-config overrides must name keys the app declares (``fuse_dicts``).

Importing is process-wide: two apps whose packages share a name cannot run in one process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.config import (
    flatten_dict,
    fuse_dicts,
    get_metadata_from_config,
    get_project_config,
    parse_config_args,
)
from flwr.serverapp import ServerApp
from flwr.supercore.object_ref import load_app

from ..errors import ConfigError
from .messages import RunGrid, ensure_task_identity

PROBE_NODES = 1024  # node ids the probe offers: more than any strategy's minimum


@dataclass(frozen=True)
class FlowerApp:
    """A loaded Flower App: its components, its fused run config and this node's config."""

    directory: Path
    fab_id: str  # "publisher/name", as Flower names it
    version: str
    run_config: dict[str, Any]
    node_config: dict[str, Any]
    client_app: ClientApp
    server_app: ServerApp
    initial: ArrayRecord = field(repr=False)  # what the ServerApp starts its strategy from

    @property
    def task(self) -> str:
        """The group task: the app's name and version and a hash of its id, version and model
        shapes, so nodes of different apps (or of one app with another model) never mix."""
        return app_task(self.fab_id, self.version, self.initial)


def app_task(fab_id: str, version: str, arrays: ArrayRecord) -> str:
    """``name@version-hash`` (at most 64 characters, as charters allow)."""
    shapes = ";".join(f"{k}:{a.dtype}:{tuple(a.shape)}" for k, a in arrays.items())
    digest = hashlib.sha256(f"{fab_id}\n{version}\n{shapes}".encode()).hexdigest()[:12]
    name = fab_id.rpartition("/")[2]
    return f"{name[:32]}@{version[:16]}-{digest}"


def parse_config(text: str | None, option: str) -> dict[str, Any]:
    """``"k=v k2=v2"`` (or a .toml file) parsed by Flower's own parser, flattened."""
    if not text:
        return {}
    try:
        return parse_config_args([text])
    except Exception as exc:  # click.ClickException, TOMLDecodeError, OSError
        message = getattr(exc, "message", None) or str(exc)
        raise ConfigError(f"{option} {text!r}: {message}") from None


def load_flower_app(
    directory: str | Path, run_config: str | None = None, node_config: str | None = None
) -> FlowerApp:
    """Load the app in ``directory``; ``run_config`` overrides declared keys of its run config,
    ``node_config`` is this node's ``context.node_config``. Raises ``ConfigError``."""
    path = Path(directory).expanduser().absolute()
    if not (path / "pyproject.toml").is_file():
        raise ConfigError(f"--app {directory}: no pyproject.toml in {path}")
    try:
        project = get_project_config(path)
    except Exception as exc:  # ValueError (invalid fields), TOMLDecodeError
        raise ConfigError(f"--app {directory}: {exc}") from None
    fab_id, version = get_metadata_from_config(project)
    declared = flatten_dict(project["tool"]["flwr"]["app"].get("config", {}))
    overrides = parse_config(run_config, "--run-config")
    try:
        fused = fuse_dicts(declared, overrides)
    except ValueError as exc:
        raise ConfigError(
            f"--run-config: {exc} (the app declares: {', '.join(sorted(declared)) or 'nothing'})"
        ) from None
    components = project["tool"]["flwr"]["app"]["components"]
    client_app = _component(path, components["clientapp"], ClientApp)
    server_app = _component(path, components["serverapp"], ServerApp)
    return FlowerApp(
        directory=path,
        fab_id=fab_id,
        version=version,
        run_config=fused,
        node_config=parse_config(node_config, "--node-config"),
        client_app=client_app,
        server_app=server_app,
        initial=probe_initial_arrays(server_app, fused),
    )


def _component(path: Path, ref: str, kind: type) -> Any:
    try:
        obj = load_app(ref, ConfigError, path)
    except ConfigError as exc:
        raise ConfigError(f"--app {path}: component {ref!r}: {exc}") from None
    except Exception as exc:  # ImportError, or whatever the module raises at import
        raise ConfigError(
            f"--app {path}: cannot import component {ref!r}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(obj, kind):
        raise ConfigError(
            f"--app {path}: component {ref!r} is a {type(obj).__name__}, not a {kind.__name__}"
        )
    return obj


class _Probed(Exception):
    """The probe saw the first training message: the ServerApp's run stops there."""


class _ProbeGrid(RunGrid):
    """A Grid that records the arrays of the first training message and stops the run."""

    def __init__(self) -> None:
        self.arrays: ArrayRecord | None = None

    def get_node_ids(self) -> Iterable[int]:
        return list(range(1, PROBE_NODES + 1))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise _Probed  # only send_and_receive is supported by the probe

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        for message in messages:
            if message.metadata.message_type.startswith("train"):
                records = list(message.content.array_records.values())
                if records:
                    self.arrays = records[0]
                    raise _Probed
        return []


def probe_initial_arrays(server_app: ServerApp, run_config: dict[str, Any]) -> ArrayRecord:
    """The arrays the ServerApp's strategy starts from: its ``main`` runs until the first
    training message goes out (its initial ``evaluate_fn`` call, if any, runs too)."""
    ensure_task_identity()
    grid = _ProbeGrid()
    context = Context(
        run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=dict(run_config)
    )
    try:
        server_app(grid, context)
    except _Probed:
        pass
    except Exception as exc:
        raise ConfigError(
            f"the ServerApp failed before its first round: {type(exc).__name__}: {exc}"
        ) from exc
    if grid.arrays is None:
        raise ConfigError("the ServerApp ended without sending a training message")
    return grid.arrays
