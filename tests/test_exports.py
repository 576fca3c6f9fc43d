"""The public API, pinned: each package's ``__all__``, every name importable and documented,
docs/api.md naming the same things, and one exception tree."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import click
import pytest

from mycelium_p2p import errors

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"

PUBLIC = {
    "mycelium_p2p": [
        "ClientProcess",
        "FlSettings",
        "GroupSettings",
        "MigrationSettings",
        "Node",
        "NodeConfig",
        "__version__",
    ],
    "mycelium_p2p.cli": ["cli", "main"],
    "mycelium_p2p.web": ["WebView"],
    "mycelium_p2p.dht": [
        "DhtConfig",
        "DhtNode",
        "Listing",
        "ListingMemory",
        "MyceliumProtocol",
        "ProtocolStats",
        "RecordStore",
        "RttEstimator",
        "fetch_advert",
        "fetch_adverts",
        "publish_advert",
    ],
    "mycelium_p2p.fl": [
        "ClientProcess",
        "ClientRunner",
        "FlowerApp",
        "GroupGrid",
        "RoundReport",
        "STRATEGIES",
        "Screening",
        "TrainCaps",
        "load_flower_app",
        "make_strategy",
    ],
    "mycelium_p2p.group": [
        "Channel",
        "ChannelServer",
        "ConnectionLimits",
        "GroupConfig",
        "GroupInfo",
        "GroupMember",
        "Invite",
        "Member",
        "ModelSnapshot",
        "Reply",
        "StreamNetwork",
        "TcpStreams",
        "issue_invite",
        "verify_invite",
    ],
    "mycelium_p2p.migration": [
        "Decision",
        "MergeConfig",
        "MergePolicy",
        "MigrationConfig",
        "MigrationPolicy",
        "SplitPolicy",
    ],
    "mycelium_p2p.node": [
        "DataDirLock",
        "dht_client",
        "query_groups",
        "run_seed",
        "run_until_signalled",
    ],
    "mycelium_p2p.records": [
        "DEFAULT_CLOCK_SKEW",
        "GroupAdvert",
        "GroupCharter",
        "GroupMetrics",
        "INDEX_SHARDS",
        "KINDS",
        "LeaderCert",
        "MAX_ENDED",
        "MAX_RECORD_BYTES",
        "Record",
        "RecordKind",
        "VerifiedBlobs",
        "best_per_signer",
        "founding_cert",
        "index_topic",
        "index_topics",
        "next_seq",
        "record_key",
        "roster_topic",
        "sign_advert",
        "sign_record",
        "signer_of",
        "verify_record",
    ],
}


def _defined_with_a_comment(package: str, name: str) -> bool:
    """Whether a value (a constant) is assigned in ``package`` with a ``#:`` line above it or a
    comment beside it: a constant has no docstring of its own."""
    root = Path(importlib.import_module(package).__file__ or "").parent
    assignment = re.compile(rf"^{re.escape(name)}\s*[:=]")
    for path in root.glob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if assignment.match(line):
                return "#" in line or (i > 0 and lines[i - 1].startswith("#:"))
    return False


def _documented(package: str, name: str, obj: Any) -> bool:
    if name == "__version__":
        return True
    if isinstance(obj, click.Command):
        return bool(obj.help)
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return bool(inspect.getdoc(obj))
    return _defined_with_a_comment(package, name)


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned(package: str) -> None:
    assert sorted(importlib.import_module(package).__all__) == sorted(PUBLIC[package])


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_public_name_is_importable_and_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert inspect.getdoc(module), f"{package} has no docstring"
    for name in module.__all__:
        obj = getattr(module, name)  # lazy names are imported here
        assert _documented(package, name, obj), f"{package}.{name} is not documented"


def test_an_unknown_name_is_an_attribute_error() -> None:
    unknown = "no_such_name"
    for package in ("mycelium_p2p", "mycelium_p2p.fl", "mycelium_p2p.group"):
        with pytest.raises(AttributeError, match=unknown):
            getattr(importlib.import_module(package), unknown)


def test_the_api_page_names_every_public_name() -> None:
    page = DOCS.read_text(encoding="utf-8")
    named = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", page))
    missing = {f"{p}.{n}" for p, names in PUBLIC.items() for n in names if n not in named}
    assert not missing
    for package in PUBLIC:
        assert f"`{package}`" in page


def _error_classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }


def test_every_error_is_in_the_tree_and_documented() -> None:
    tree = errors.__doc__ or ""
    for name, cls in _error_classes().items():
        assert issubclass(cls, errors.MyceliumError), name
        assert inspect.getdoc(cls), f"{name} has no docstring"
        assert re.search(rf"[─ ]{name}\b", tree), f"{name} is not in errors.py's tree"
        assert cls.__module__ == "mycelium_p2p.errors", f"{name} is defined elsewhere"


def test_the_internal_errors_say_so() -> None:
    for cls in (errors.StepDown, errors.NotCommitted, errors.HeaderRefused, errors.OwnerClosed):
        assert (cls.__doc__ or "").startswith("Internal:"), cls.__name__


def test_errors_keep_the_bases_callers_catch() -> None:
    assert issubclass(errors.BadMessage, ValueError)
    assert issubclass(errors.HeaderRefused, ValueError)
    assert issubclass(errors.OwnerClosed, RuntimeError)
    assert issubclass(errors.RemoteError, errors.ChannelError)
    assert issubclass(errors.BootstrapError, errors.NetworkError)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mycelium_p2p.aio", "OwnerClosed"),
        ("mycelium_p2p.cli.localnet", "LocalNetError"),
        ("mycelium_p2p.fl.app_leader", "NotCommitted"),
        ("mycelium_p2p.fl.data", "DataError"),
        ("mycelium_p2p.fl.limits", "TrainConfigRefused"),
        ("mycelium_p2p.fl.task", "DataError"),
        ("mycelium_p2p.fl.wire", "WireError"),
        ("mycelium_p2p.fl.worker", "WorkerError"),
        ("mycelium_p2p.group.commits", "StepDown"),
        ("mycelium_p2p.group.frames", "ChannelError"),
        ("mycelium_p2p.group.frames", "HeaderRefused"),
        ("mycelium_p2p.group.invite", "InviteError"),
        ("mycelium_p2p.group.member", "JoinRefused"),
        ("mycelium_p2p.group.member", "StepDown"),
        ("mycelium_p2p.group.messages", "BadMessage"),
        ("mycelium_p2p.group.transport", "ChannelError"),
        ("mycelium_p2p.group.transport", "RemoteError"),
    ],
)
def test_errors_are_still_importable_where_they_used_to_live(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_one_address_type() -> None:
    from mycelium_p2p.addresses import Address
    from mycelium_p2p.group import state

    assert state.Address is Address
