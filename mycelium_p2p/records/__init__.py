"""Signed, schema-checked records: the only thing the DHT stores."""

from .advert import GroupAdvert, GroupMetrics, sign_advert
from .charter import GroupCharter
from .envelope import (
    DEFAULT_CLOCK_SKEW,
    MAX_RECORD_BYTES,
    Record,
    VerifiedBlobs,
    best_per_signer,
    next_seq,
    record_key,
    sign_record,
    signer_of,
    verify_record,
)
from .kinds import (
    INDEX_SHARDS,
    KINDS,
    MAX_ENDED,
    RecordKind,
    index_topic,
    index_topics,
    roster_topic,
)
from .leadership import LeaderCert, founding_cert

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "INDEX_SHARDS",
    "KINDS",
    "MAX_ENDED",
    "MAX_RECORD_BYTES",
    "GroupAdvert",
    "GroupCharter",
    "GroupMetrics",
    "LeaderCert",
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
]
