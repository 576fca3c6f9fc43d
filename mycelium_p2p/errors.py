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
    └── NetworkError           the network could not be used
        └── BootstrapError     no bootstrap peer answered

Callers that only want "was it refused?" catch ``RecordError``; the CLI turns any
``MyceliumError`` into a one-line message and a non-zero exit.
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
