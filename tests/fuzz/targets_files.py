"""Fuzz targets for model content from peers (``fl.wire``, ``fl.npy``) and users' files."""

from __future__ import annotations

import math
import os
from typing import Any

import click
import numpy as np
from flwr.app import Array, ArrayRecord
from hypothesis import strategies as st

from mycelium_p2p.addresses import read_peers_file
from mycelium_p2p.cli.main import _load_config, cli
from mycelium_p2p.errors import ConfigError, IdentityError
from mycelium_p2p.fl.limits import TrainCaps, TrainConfigRefused, bound_train_config
from mycelium_p2p.fl.npy import to_ndarray, well_formed
from mycelium_p2p.fl.task import DataError, load_array_file
from mycelium_p2p.fl.wire import WireError, decode_content
from mycelium_p2p.identity import Identity

from .corpus import (
    CSV_SEED,
    PEERS_SEED,
    TOML_SEED,
    corpus,
    npy_bytes,
    npz_bytes,
    npz_members,
    npz_seeds,
)
from .harness import Context, InvalidStored, Target
from .mutate import mutated_bytes, mutated_tree

# -- model content -------------------------------------------------------------------------------


@st.composite
def contents(draw: st.DrawFn) -> tuple[Any, list[bytes]]:
    """A model's records description edited as a tree, with its segments edited as bytes."""
    records, segments = corpus().content
    if draw(st.booleans()):
        records = draw(mutated_tree(records))
    if draw(st.booleans()):
        i = draw(st.integers(0, len(segments) - 1))
        segments = [*segments]
        segments[i] = draw(mutated_bytes([segments[i]], max_random=200))
    return records, segments


def _finite(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(not isinstance(v, float) or math.isfinite(v) for v in values)


def check_content(case: tuple[Any, list[bytes]], _ctx: Context) -> str:
    """Decoding checks structure; numbers in config and metric records are checked where they
    are used: a member's ``bound_train_config`` (here) and a leader's ``check_reply``."""
    content = decode_content(*case)
    for record in content.values():
        if isinstance(record, ArrayRecord):
            for array in record.values():
                if to_ndarray(array).shape != tuple(array.shape):
                    raise AssertionError("an accepted array reads with another shape")
        elif not all(map(_finite, record.values())):
            try:
                bound_train_config(record, TrainCaps())
            except TrainConfigRefused:
                continue
            raise InvalidStored(f"a member would train with non-finite settings: {record}")
    return "accepted"


@st.composite
def arrays(draw: st.DrawFn) -> Array:
    """Flower ``Array``s whose dtype, shape, stype or bytes were edited."""
    records, segments = corpus().content
    _, dtype, shape, stype, index = records[0][2][draw(st.integers(0, 1))]
    which = draw(st.integers(0, 4))
    if which == 0:
        dtype = draw(st.sampled_from(["<f4", "float64", "object", "V8", "|S3", "?", "x", "u1"]))
    elif which == 1:
        shape = draw(st.lists(st.integers(-3, 2**40), max_size=4))
    elif which == 2:
        stype = draw(st.sampled_from(["numpy.ndarray", "torch", ""]))
    data = segments[index]
    if which >= 3 or draw(st.booleans()):
        data = draw(mutated_bytes([data], max_random=300))
    return Array(dtype=dtype, shape=tuple(shape), stype=stype, data=data)


def check_array(array: Array, _ctx: Context) -> str:
    if not well_formed(array):
        return "refused"
    if to_ndarray(array).shape != tuple(array.shape):
        raise AssertionError("a well-formed array reads with another shape")
    return "accepted"


# -- users' files --------------------------------------------------------------------------------

_DTYPES = ["f2", "f4", "f8", "i1", "i8", "u8", "?", "c8", "U3", "S2", "M8[s]"]


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    """``.npz`` archives edited as bytes, or holding arrays of odd dtypes, shapes and values."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(mutated_bytes(list(npz_seeds()), max_random=400))
    if choice == 1:  # .npy headers that declare what they do not hold
        shape = draw(st.lists(st.sampled_from([0, 1, 2, 3, -1, 10**9, 2**62, 10**13]), max_size=3))
        descr = draw(st.sampled_from(["<f8", "|O", "<U3", ">f4", "V8", "|b1", "<c16", "<M8[s]"]))
        data = draw(st.binary(max_size=64))
        return npz_members(npy_bytes(tuple(shape), descr, data), npy_bytes((2,), "<i8", bytes(16)))
    n = draw(st.integers(0, 5))
    xshape = [n, *draw(st.lists(st.integers(0, 3), max_size=3))]
    x = np.zeros(xshape, dtype=draw(st.sampled_from(_DTYPES)))
    y = np.zeros(
        draw(st.sampled_from([[n], [n, 1], [], [n + 1]])), dtype=draw(st.sampled_from(_DTYPES))
    )
    for array, values in ((x, [np.nan, np.inf, 1e38, 7e4, 0.5]), (y, [-1, 3, 2**31, 0.5, 1e30])):
        if array.size and array.dtype.kind in "fiu":
            with np.errstate(all="ignore"):
                array.flat[0] = np.array(draw(st.sampled_from(values))).astype(array.dtype)
    return npz_bytes(x, y)


def _check_dataset(data: Any) -> str:
    if not (np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()):
        raise InvalidStored("loaded non-finite features")
    if data.y_train.dtype != np.int64 or (data.y_train < 0).any():
        raise InvalidStored("loaded labels that are not non-negative integers")
    return "accepted"


def check_npz(data: bytes, ctx: Context) -> str:
    path = ctx.tmp / "data.npz"
    path.write_bytes(data)
    return _check_dataset(load_array_file(path))


_CELLS = ["nan", "inf", "-inf", "1e400", "0x10", "1_000", " 1 ", "", "é", "3", "-0", "2.5", '"1"']


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(mutated_bytes([CSV_SEED.encode()], max_random=300))
    cell = st.one_of(st.sampled_from(_CELLS), st.integers(-5, 12).map(str))
    rows = draw(st.lists(st.lists(cell, min_size=1, max_size=4), max_size=6))
    return "\n".join(",".join(row) for row in rows).encode()


def check_csv(data: bytes, ctx: Context) -> str:
    path = ctx.tmp / "data.csv"
    path.write_bytes(data)
    return _check_dataset(load_array_file(path))


_TOML_VALUES = [
    "nan", "+nan", "inf", "-inf", "1e999", "-0.0", '"x"', '""', "[1, 2]", '["a", 3]', "{a = 1}",
    "true", "0", "-1", "99999999999999999999", "1979-05-27T07:32:00Z", "'127.0.0.1:1'",
]  # fmt: skip
_TOML_KEYS = ["port", "capacity", "evaluation-interval", "bootstrap", "timeout", "heartbeat",
              "lr", "threshold", "nodes", "duration", "interval", "ttl", "data-dir"]  # fmt: skip


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A TOML config with an edited value (NaN, wrong types...), a peers file or a key file."""
    kind = draw(st.sampled_from(["toml", "toml", "toml-bytes", "peers", "key"]))
    if kind == "toml":
        literal = draw(
            st.one_of(
                st.sampled_from(_TOML_VALUES),
                st.integers(-(2**63), 2**63 - 1).map(str),
                st.floats(allow_nan=False, allow_infinity=False).map(repr),
            )
        )
        table = draw(st.sampled_from(["join", "groups", "demo", "nodes", "invite", "bootstrap"]))
        return "toml", _with_value(table, draw(st.sampled_from(_TOML_KEYS)), literal).encode()
    if kind == "toml-bytes":
        return "toml", draw(mutated_bytes([TOML_SEED.encode()], max_random=300))
    if kind == "peers":
        return "peers", draw(mutated_bytes([PEERS_SEED.encode()], max_random=200))
    return "key", draw(mutated_bytes([bytes(32)], max_random=64))


def _with_value(table: str, key: str, literal: str) -> str:
    """The seed config with ``[table] key = literal`` (the table added if missing)."""
    lines = TOML_SEED.splitlines()
    out, in_table, placed = [], False, False
    for line in lines:
        if line.startswith("["):
            if in_table and not placed:
                out.append(f"{key} = {literal}")
                placed = True
            in_table = line == f"[{table}]"
        if in_table and line.split("=")[0].strip() == key:
            continue
        out.append(line)
    if not placed:
        out += ([] if in_table else [f"[{table}]"]) + [f"{key} = {literal}"]
    return "\n".join(out) + "\n"


def check_config(case: tuple[str, bytes], ctx: Context) -> str:
    kind, data = case
    path = ctx.tmp / f"fuzz.{kind}"
    path.write_bytes(data)
    if kind == "peers":
        for host, port in read_peers_file(path):
            if not (host and 0 < port < 65536):
                raise InvalidStored(f"read a bad peer address {(host, port)}")
        return "accepted"
    if kind == "key":
        os.chmod(path, 0o600)
        Identity.load(path)
        return "accepted"
    root = click.Context(cli)
    _load_config(root, None, str(path))
    accepted = 0
    for name, command in cli.commands.items():
        try:
            sub = command.make_context(name, [], parent=root)
        except click.ClickException:
            continue
        bad = {k: v for k, v in sub.params.items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            raise InvalidStored(f"`{name}` took non-finite settings from the config: {bad}")
        accepted += 1
    return f"{accepted} commands"


TARGETS = [
    Target(
        "content", "fl.wire.decode_content (Flower records)", contents, check_content, (WireError,)
    ),
    Target("npy", "fl.npy.well_formed, to_ndarray", arrays, check_array),
    Target("npz", "fl.task.load_array_file on .npz", npz_files, check_npz, (DataError,)),
    Target("csv", "fl.task.load_array_file on .csv", csv_files, check_csv, (DataError,)),
    Target(
        "config",
        "--config TOML (every command's options), peers file, key file",
        config_files,
        check_config,
        (click.ClickException, ConfigError, IdentityError),
    ),
]
