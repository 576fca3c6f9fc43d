"""Every failure mycelium-p2p reports, in one tree.

::

    MyceliumError
    ├── IdentityError          a key file is missing, unreadable or not an Ed25519 key
    ├── ConfigError            a setting, address or peers file is malformed
    ├── RecordError            a record was refused; nothing was stored
    │   ├── MalformedRecord    not msgpack, wrong envelope or schema, unknown kind
    │   ├── RecordTooLarge     over its kind's size limit (1000 bytes; adverts 4096)
    │   ├── BadSignature       the Ed25519 signature does not verify
    │   ├── KeyBindingError    stored under a key its signer does not own
    │   ├── RecordExpired      expires-at is in the past
    │   ├── RecordFromFuture   issued-at is ahead of our clock by more than the skew
    │   ├── StaleRecord        seq lower than (or equal to, with other bytes) the stored one
    │   ├── StoreFull          the node holds as many keys or entries as it is allowed
    │   └── ProofError         a charter, vote or leadership certificate proves nothing
    ├── NetworkError           the network could not be used
    │   └── BootstrapError     no bootstrap peer answered
    ├── ChannelError           a group channel could not be opened, or broke
    │   └── RemoteError        the peer answered a request with an error (code, reason)
    ├── BadMessage             a peer's g.* message has the wrong shape (also a ValueError)
    ├── JoinRefused            a group's leader would not admit us
    ├── InviteError            an invite is malformed, expired, or not for us
    ├── WireError              a peer's content does not decode into Flower records
    ├── TrainConfigRefused     a leader asked for training this member will not do
    ├── DataError              a data file or data setting is unusable
    ├── WorkerError            the ClientApp worker process died or misbehaved
    ├── LocalNetError          a process of a local network (demo, chaos) misbehaved
    ├── StoppedAbruptly        a second SIGINT/SIGTERM cut a clean shutdown short
    │
    │   internal control flow: raised and caught inside the package
    ├── StepDown               a leader saw a newer term and stops leading
    ├── NotCommitted           a Flower App round was not acknowledged by a majority
    ├── HeaderRefused          a frame header is over a limit (becomes a ChannelError)
    └── OwnerClosed            a task was spawned on a closing TaskOwner (also a RuntimeError)

Callers that only want "was it refused?" catch ``RecordError``; the CLI turns any
``MyceliumError`` into a one-line message and a non-zero exit. Each error is also importable
from the module that raises it (``group.transport.ChannelError``, ``fl.data.DataError``, ...).
"""

from __future__ import annotations


class MyceliumError(Exception):
    """Base class of every error this package raises on purpose."""


class IdentityError(MyceliumError):
    """A node or group key could not be loaded or created."""


class ConfigError(MyceliumError):
    """A setting, address or peers file is malformed."""


class RecordError(MyceliumError):
    """A record was refused; the store it was offered to is unchanged."""


class MalformedRecord(RecordError):
    """The bytes are not a well-formed record of a known kind."""


class RecordTooLarge(RecordError):
    """The encoded record is over the size limit."""


class BadSignature(RecordError):
    """The signature does not verify against the signer key."""


class KeyBindingError(RecordError):
    """The DHT key is not the one derived from the record's signer and topic."""


class RecordExpired(RecordError):
    """The record's expires-at has passed."""


class RecordFromFuture(RecordError):
    """The record claims to be issued further in the future than the clock skew allows."""


class StaleRecord(RecordError):
    """A newer (or same-seq, different) record from the same signer is already stored."""


class StoreFull(RecordError):
    """The store is at its key or per-key entry limit and nothing could make room."""


class ProofError(RecordError):
    """A group charter, a vote or a leadership certificate is malformed or not signed as it
    claims, or does not prove what it is offered for."""


class NetworkError(MyceliumError):
    """The network could not be used."""


class BootstrapError(NetworkError):
    """No bootstrap peer answered."""


class StoppedAbruptly(MyceliumError):
    """A second SIGINT/SIGTERM cut a clean shutdown short."""


# -- groups: channels, messages, membership ---------------------------------------------------


class ChannelError(MyceliumError):
    """A channel could not be opened, broke, or the peer answered with an error."""


class RemoteError(ChannelError):
    """The peer handled a request and answered with an error (``code``, ``reason``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class BadMessage(MyceliumError, ValueError):
    """A peer's ``g.*`` message does not have the shape its method requires."""


class JoinRefused(MyceliumError):
    """A group's leader refused to admit us (full, invite-only, not the leader...).

    ``code`` is the peer's error code, when it answered with one.
    """

    def __init__(self, reason: str, *, code: str = "") -> None:
        super().__init__(reason)
        self.code = code


class InviteError(MyceliumError):
    """An invite is malformed, expired, for someone else, or not signed by the founder."""


# -- learning: Flower records, training, data, workers ---------------------------------------


class WireError(MyceliumError):
    """A peer sent content that does not decode into Flower records."""


class TrainConfigRefused(MyceliumError):
    """A leader's training configuration holds a value this member will not train with."""


class DataError(MyceliumError):
    """A data file or data setting is unusable; the message names it and the problem."""


class WorkerError(MyceliumError):
    """The worker process died, could not start, or answered something unreadable."""


class LocalNetError(MyceliumError):
    """A process of the local network (``cli.localnet``) did not start or misbehaved."""


# -- internal control flow: raised and caught inside the package ------------------------------


class StepDown(MyceliumError):
    """Internal: this leader has seen a newer term and must stop; its round loop ends."""


class NotCommitted(MyceliumError):
    """Internal: a majority did not acknowledge a Flower App's round; that run of it ends.

    The ServerApp's next run starts from the group's latest committed model.
    """


class HeaderRefused(MyceliumError, ValueError):
    """Internal: a frame header would decode into more than a header may hold.

    ``group.headers.decode_header`` turns it into a ``ChannelError``.
    """


class OwnerClosed(MyceliumError, RuntimeError):
    """Internal: a task was spawned on a ``TaskOwner`` that is shutting down."""
