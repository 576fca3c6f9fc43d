"""Validly signed group adverts from fresh keys, made fast: what a flooder would pre-compute.

Each advert is a new group founded by a new key (its charter, founding vote and record are
three Ed25519 signatures) and is valid by every check a storing node makes; only the
verification a normal ``sign_advert`` runs on its own output is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec

from mycelium_p2p.identity import Identity
from mycelium_p2p.records import index_topic
from mycelium_p2p.records.charter import CHARTER_DOMAIN, _Signed, _Terms, group_id_of
from mycelium_p2p.records.envelope import RECORD_DOMAIN
from mycelium_p2p.records.kinds import RECORD_VERSION
from mycelium_p2p.records.leadership import LeaderCert, sign_vote


def flood_advert(
    identity: Identity, *, now: float, ttl: float = 600.0, name: str = "flood"
) -> tuple[str, bytes]:
    """``(topic, blob)`` of a valid advert for a new group that ``identity`` founded."""
    terms = msgspec.msgpack.encode(
        _Terms(1, name, "digits", "open", 10, identity.public_key, float(now), os.urandom(8))
    )
    charter = msgspec.msgpack.encode(_Signed(terms, identity.sign(CHARTER_DOMAIN + terms)))
    group_id = group_id_of(terms)
    vote = sign_vote(identity, group_id, 1, identity.public_key)
    cert = LeaderCert(group_id, 1, identity.public_key, [(identity.public_key, vote)])
    topic = index_topic(group_id)
    payload = msgspec.msgpack.encode(
        {
            "v": RECORD_VERSION,
            "kind": "advert",
            "topic": topic,
            "owned": False,
            "signer": identity.public_key,
            "seq": 1,
            "iat": float(now),
            "exp": float(now + ttl),
            "body": {
                "charter": charter,
                "leader": ["127.0.0.1", 9],
                "term": 1,
                "cert": cert.encode(),
                "metrics": {
                    "accuracy": 0.99,
                    "loss": 0.01,
                    "round": 1,
                    "members": 1,
                    "capacity": 10,
                },
            },
        }
    )
    blob = msgspec.msgpack.encode((payload, identity.sign(RECORD_DOMAIN + payload)))
    return topic, blob


def flood_adverts(count: int, *, now: float, ttl: float = 600.0) -> Iterator[tuple[str, bytes]]:
    """``count`` adverts from ``count`` fresh keys (each key made from random bytes)."""
    for _ in range(count):
        yield flood_advert(Identity.from_seed(os.urandom(32)), now=now, ttl=ttl)
