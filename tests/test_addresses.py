"""Parsing peer addresses and peers files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mycelium_p2p.addresses import parse_address, read_peers_file, resolve
from mycelium_p2p.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3:8468", ("10.1.2.3", 8468)),
        ("seed.lan:9000", ("seed.lan", 9000)),
        ("seed.lan", ("seed.lan", 8468)),
        ("[::1]:8470", ("::1", 8470)),
        ("[fe80::1]", ("fe80::1", 8468)),
        ("::1", ("::1", 8468)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, 8468) == expected


@pytest.mark.parametrize("text", ["host:port", "host:0", "host:70000", ":8468", "[::1]x", ""])
def test_bad_addresses_name_the_problem(text: str) -> None:
    with pytest.raises(ConfigError, match="bad address"):
        parse_address(text, 8468)


def test_port_0_is_any_free_port_only_where_we_listen() -> None:
    assert parse_address("127.0.0.1:0", any_port=True) == ("127.0.0.1", 0)
    with pytest.raises(ConfigError, match=r"outside 0\.\.65535"):
        parse_address("127.0.0.1:65536", any_port=True)


def test_a_port_is_required_without_a_default() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        parse_address("seed.lan")


def test_peers_file(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    path.write_text("# seeds\n198.18.0.1:8468\n\n198.18.0.2  # second\n")
    assert read_peers_file(path) == [("198.18.0.1", 8468), ("198.18.0.2", 8468)]
    path.write_text("198.18.0.1:nope\n")
    with pytest.raises(ConfigError, match=":1:"):
        read_peers_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_peers_file(tmp_path / "missing")


def test_resolve_turns_names_into_ips() -> None:
    assert asyncio.run(resolve([("localhost", 1), ("127.0.0.1", 1)])) == [("127.0.0.1", 1)]
    with pytest.raises(ConfigError, match="cannot resolve"):
        asyncio.run(resolve([("no-such-host.invalid", 1)]))
