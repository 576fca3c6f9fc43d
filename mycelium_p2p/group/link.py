"""How a member asks its peers: every request names the group and has a deadline.

One ``Link`` serves all of ``GroupMember``'s parts, so a test can stand in for the network of
one member by replacing ``request``.
"""

from __future__ import annotations

from typing import Any

from ..addresses import Address
from .state import GroupConfig
from .transport import ChannelServer


class Link:
    """``g.*`` requests from one member of ``group_id`` over ``channels``."""

    def __init__(self, channels: ChannelServer, group_id: str, config: GroupConfig) -> None:
        self.channels = channels
        self.group_id = group_id
        self.config = config

    async def request(
        self,
        key: bytes,
        addr: Address,
        method: str,
        header: dict[str, Any],
        segments: list[bytes] | tuple[bytes, ...] = (),
        *,
        timeout: float | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Ask the member ``key`` at ``addr``; ``timeout`` defaults to the request timeout."""
        header = {"gid": self.group_id, **header}
        return await self.channels.request(
            addr,
            key,
            method,
            header,
            segments,
            timeout=self.config.request_timeout if timeout is None else timeout,
        )
