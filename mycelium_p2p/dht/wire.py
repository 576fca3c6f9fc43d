"""The DHT's datagrams, in rpcudp's format so that stock kademlia nodes interoperate.

A datagram is ``REQUEST`` (``0x00``) or ``RESPONSE`` (``0x01``), a random 20-byte message id,
then a msgpack body: a request's is ``[name, args]`` or ``[name, args, padding]`` (see
``peers.py`` on padding), a response's is any value. A handler that finds an argument of the
wrong shape raises ``BadRequest``.
"""

from __future__ import annotations

from typing import Any

import msgpack
from rpcudp.exceptions import MalformedMessage

from ..identity import NODE_ID_SIZE

MAX_REQUEST_BYTES = 8192  # rpcudp refuses to send more; so do we
REQUEST, RESPONSE = b"\x00", b"\x01"
MSG_ID_SIZE = 20
HEADER_SIZE = 1 + MSG_ID_SIZE  # the kind byte and the message id


def request_body(name: str, args: list[Any], pad_to: int = 0) -> bytes:
    """The body of request ``name``, padded so that the datagram is about ``pad_to`` bytes;
    ``MalformedMessage`` if it is over ``MAX_REQUEST_BYTES``."""
    data: bytes = msgpack.packb([name, args])
    padding = pad_to - (HEADER_SIZE + len(data)) - 3
    if padding > 0:
        data = msgpack.packb([name, args, bytes(padding)])
    if len(data) > MAX_REQUEST_BYTES:
        raise MalformedMessage(f"{name} request is {len(data)} bytes; the limit is 8192")
    return data


def unpack_body(data: bytes) -> tuple[bool, Any]:
    """(True, the body) of datagram ``data``, or (False, None) if it is not msgpack."""
    try:
        return True, msgpack.unpackb(data[HEADER_SIZE:], raw=False, strict_map_key=False)
    except Exception:  # msgpack raises many types on garbage
        return False, None


def is_request(body: Any) -> bool:
    """Whether a request's body has the shape ``[name, args]`` or ``[name, args, padding]``."""
    return (
        isinstance(body, list)
        and len(body) in (2, 3)
        and isinstance(body[0], str)
        and isinstance(body[1], list)
    )


class BadRequest(ValueError):
    """A request whose arguments do not have the right shape."""


def check_id(value: Any, what: str = "node id") -> bytes:
    """``value`` if it is an id (a node's, a key), else ``BadRequest``."""
    if not isinstance(value, bytes) or len(value) != NODE_ID_SIZE:
        raise BadRequest(f"{what} must be {NODE_ID_SIZE} bytes")
    return value
