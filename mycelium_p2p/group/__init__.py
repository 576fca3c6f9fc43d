"""Groups: channels between members, membership, election, the group's model, invites.

Each name is imported on first use (``from mycelium_p2p.group import GroupMember``), so a
module that needs one piece (``group.state``) does not load them all.
"""

from .._lazy import lazy_exports

__all__ = [
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
]

__getattr__ = lazy_exports(
    __name__,
    {
        "Channel": ".channel",
        "ChannelServer": ".transport",
        "ConnectionLimits": ".transport",
        "GroupConfig": ".state",
        "GroupInfo": ".state",
        "GroupMember": ".member",
        "Invite": ".invite",
        "Member": ".state",
        "ModelSnapshot": ".state",
        "Reply": ".channel",
        "StreamNetwork": ".streams",
        "TcpStreams": ".streams",
        "issue_invite": ".invite",
        "verify_invite": ".invite",
    },
)
