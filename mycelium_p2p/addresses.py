"""Peer addresses: ``host:port`` strings, peers files, and resolving names to IPs.

Names are resolved only when this node's own user gives them (bootstrap peers, the address to
advertise). What peers send is an IP address: ``WireAddress`` refuses anything else where a
message is decoded, and ``ip_literal`` is the dialler's last check, so nothing a peer sends is
ever looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from .errors import ConfigError

#: A peer's ``(host, port)``: the one address type of the package. Where peers send one,
#: ``WireAddress`` is the checked form (an IP address, never a name).
Address = tuple[str, int]

#: An IP address as peers send it (IPv4 dotted or IPv6: digits, hex, dots, colons).
IpHost = Annotated[str, Meta(min_length=2, max_length=45, pattern=r"^[0-9A-Fa-f.:]+$")]
Port = Annotated[int, Meta(ge=0, le=65535)]
WireAddress = tuple[IpHost, Port]


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, or None when it is not one (a name is never looked up)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_address(text: str, default_port: int | None = None, *, any_port: bool = False) -> Address:
    """``host:port``, ``[v6]:port`` or (with a default port) a bare host, as ``(host, port)``.
    ``any_port``: an address to listen on, where port 0 means any free one."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" in text:  # [::1]:8468 or [::1]
        close = text.index("]")
        host = text[1:close]
        rest = text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"bad address {text!r}: expected [host]:port")
        port_text = rest[1:]
        sep = ":" if rest else ""
    elif not sep or ":" in host:  # bare host or bare IPv6
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"bad address {text!r}: no host")
    if not port_text:
        if default_port is None:
            raise ConfigError(f"bad address {text!r}: expected host:port")
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"bad address {text!r}: port {port_text!r} is not a number") from None
    if not (0 if any_port else 1) <= port < 65536:
        lowest = 0 if any_port else 1
        raise ConfigError(f"bad address {text!r}: port {port} outside {lowest}..65535")
    return host, port


def read_peers_file(path: Path, default_port: int = 8468) -> list[Address]:
    """Addresses from a peers file: one ``host:port`` per line; ``#`` starts a comment."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read peers file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"peers file {path} is not UTF-8 text: {exc.reason}") from None
    peers = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            peers.append(parse_address(line, default_port))
        except ConfigError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    return peers


async def resolve(addresses: Iterable[Address]) -> list[Address]:
    """Resolve host names to IP addresses (kademlia needs IPs); unknown names are an error."""
    loop = asyncio.get_running_loop()
    out: list[Address] = []
    for host, port in addresses:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve {host!r}: {exc.strerror}") from None
        found = next((info[4][0] for info in infos if info[0] == socket.AF_INET), infos[0][4][0])
        ip = str(found)  # an IP family's address is text (typeshed's int is for other families)
        if (ip, port) not in out:
            out.append((ip, port))
    return out


def reachable_ip(host: str, peers: list[Address]) -> str:
    """The address to advertise: ``host`` if specific, else the interface toward a peer."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    for peer_host, peer_port in peers:
        family = socket.AF_INET6 if ipaddress.ip_address(peer_host).version == 6 else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, peer_port))  # UDP connect sends nothing
            return str(probe.getsockname()[0])
    return "127.0.0.1"
