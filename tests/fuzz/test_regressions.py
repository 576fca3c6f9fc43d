"""What the fuzzers found, each pinned at its cause: a user's file or a peer's number that used
to crash or slip through, now refused with a documented error."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from mycelium_p2p.addresses import read_peers_file
from mycelium_p2p.cli import cli
from mycelium_p2p.dht.replies import parse_contacts
from mycelium_p2p.errors import ConfigError
from mycelium_p2p.fl.leader import metric
from mycelium_p2p.fl.limits import TrainCaps, TrainConfigRefused, bound_train_config
from mycelium_p2p.fl.task import DataError, load_array_file
from mycelium_p2p.identity import Identity

from .corpus import npy_bytes, npz_members


def invoke(*args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, list(args))
    crash = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, result.output, crash


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"\x80", "cannot read"),  # not UTF-8: tomllib raised UnicodeDecodeError
        (b"[join]\nport = inf\n", "is not a finite number"),  # IntRange: OverflowError
        (b"[join]\nport = [1, 2]\n", "is not a single value"),  # int(list): TypeError
        (b"[join]\ndata-dir = -0.0\n", "is not a path"),  # os.stat(float): TypeError
        (b"[join]\nheartbeat = nan\n", "is not a finite number"),  # passed FloatRange
        (b'[groups]\nbootstrap = [["127.0.0.1:1"]]\n', "is not a list of values"),
        (b"[groups]\ntimeout = 1979-05-27T07:32:00Z\n", "is not a single value"),
    ],
)
def test_a_bad_config_file_is_a_usage_error_not_a_traceback(
    tmp_path: Path, text: bytes, message: str
) -> None:
    config = tmp_path / "m.toml"
    config.write_bytes(text)
    code, out, crash = invoke("--config", str(config), "join", "--help")
    assert crash is None and code == 2 and message in out, out


@pytest.mark.parametrize("value", ["nan", "inf", "NaN", "+inf"])
def test_nan_and_infinity_on_the_command_line_are_refused(value: str) -> None:
    """NaN passes every range check (its comparisons are all false); inf passes ``x>=0.1``."""
    code, out, crash = invoke("groups", "-b", "127.0.0.1:9", "--timeout", value)
    assert crash is None and code == 2 and "is not a finite number" in out, out


def test_a_peers_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    path.write_bytes(b"127.0.0.1:8468\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_peers_file(path)


@pytest.mark.parametrize("value", [math.nan, math.inf, [1.0, math.nan]])
def test_any_non_finite_number_in_a_train_config_is_refused(value: object) -> None:
    """Keys the caps do not bound reach the user's ClientApp as sent: not NaN, though."""
    with pytest.raises(TrainConfigRefused, match="not finite"):
        bound_train_config({"momentum": value}, TrainCaps())


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_reads_as_missing(value: float) -> None:
    assert metric({"accuracy": value, "val_acc": 0.7}, "acc", -1.0) == 0.7
    assert metric({"accuracy": value}, "acc", -1.0) == -1.0


def test_contacts_in_dht_replies_are_ip_addresses_and_integer_ports() -> None:
    """A host name in a find_node reply would be resolved by ``sendto`` (getaddrinfo, on the
    event loop); ``True`` passed as port 1. Either makes the whole reply a liar's (None)."""
    good, other = Identity.generate().node_id, Identity.generate().node_id
    fine = [[good, "127.0.0.1", 9000], [other, "::1", 9003]]
    assert [(n.ip, n.port) for n in parse_contacts(fine, exclude=b"")] == [
        ("127.0.0.1", 9000),
        ("::1", 9003),
    ]
    for bad in (
        [other, "localhost", 9001],
        [other, "example.com", 9002],
        [other, "10.0.0.1", True],
    ):
        assert parse_contacts([fine[0], bad], exclude=b"") is None, bad


@pytest.mark.parametrize("shape", [(10**13, 2), (2**62, 4), (10**9, 2)])
def test_an_npz_whose_header_declares_more_than_it_holds_is_a_data_error(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    """numpy allocated the declared shape first: a MemoryError (146 TiB) escaped the loader."""
    path = tmp_path / "bomb.npz"
    path.write_bytes(
        npz_members(npy_bytes(shape, "<f8", bytes(48)), npy_bytes((3,), "<i8", bytes(24)))
    )
    with pytest.raises(DataError, match="declares shape"):
        load_array_file(path)


def _zip_with(flag_bits: int, method: int, data: bytes) -> bytes:
    """A one-member .npz (x.npy) with the general-purpose flags and method given."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo("x.npy")
        archive.writestr(info, data)
    raw = bytearray(out.getvalue())
    for offset in (6, raw.rfind(b"PK\x01\x02") + 8):  # local header, central directory
        struct.pack_into("<HH", raw, offset, flag_bits, method)
    return bytes(raw)


@pytest.mark.parametrize(
    ("flags", "method", "data"),
    [
        (0x1, 0, npy_bytes((2,), "<f8", bytes(16))),  # RuntimeError: password required
        (0, 99, npy_bytes((2,), "<f8", bytes(16))),  # NotImplementedError: method
        (0, zipfile.ZIP_DEFLATED, b"\xff" * 100),  # zlib.error: invalid block type
        (0, zipfile.ZIP_LZMA, bytes(100)),  # LZMAError: invalid or unsupported options
    ],
    ids=["encrypted", "unknown-method", "corrupt-deflate", "corrupt-lzma"],
)
def test_an_npz_zipfile_cannot_read_is_a_data_error(
    tmp_path: Path, flags: int, method: int, data: bytes
) -> None:
    """zipfile's own errors for these escaped the loader as tracebacks."""
    path = tmp_path / "odd.npz"
    path.write_bytes(_zip_with(flags, method, data))
    with pytest.raises(DataError, match=r"not a readable \.npz archive"):
        load_array_file(path)
