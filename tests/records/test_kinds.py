"""Record kinds' bodies: a heartbeat's self-reported traffic is checked where it enters."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import UNSET

from mycelium_p2p.dht import RecordStore
from mycelium_p2p.errors import MalformedRecord
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import record_key, roster_topic, sign_record, verify_record
from mycelium_p2p.records.kinds import HEARTBEAT, MAX_INT64, HeartbeatBody
from mycelium_p2p.testing.records import resign

NOW = 1.75e9
GROUP = "ab" * 8  # a group id is 16 hex digits
SIGNER = Identity.from_seed(bytes(range(32)))


def heartbeat(**extra: Any) -> bytes:
    """A heartbeat blob with ``extra`` body fields, signed without ``sign_record``'s checks."""
    body = {
        "group_id": GROUP,
        "addr": ["127.0.0.1", 7000],
        "role": "member",
        "round": 3,
        "model_hash": bytes(32),
        **extra,
    }
    return resign(
        SIGNER,
        {
            "v": 1,
            "kind": "heartbeat",
            "topic": roster_topic(GROUP),
            "owned": False,
            "signer": SIGNER.public_key,
            "seq": 1,
            "iat": NOW,
            "exp": NOW + 90,
            "body": body,
        },
    )


def test_a_heartbeat_from_before_the_traffic_fields_still_verifies() -> None:
    body = verify_record(heartbeat(), now=NOW).body
    assert isinstance(body, HeartbeatBody)
    assert body.bytes_in is UNSET and body.bytes_out is UNSET


@pytest.mark.parametrize("count", [0, 1, 2**32, MAX_INT64])
def test_traffic_counts_up_to_2_63_minus_1_verify(count: int) -> None:
    body = verify_record(heartbeat(bytes_in=count, bytes_out=count), now=NOW).body
    assert isinstance(body, HeartbeatBody)
    assert (body.bytes_in, body.bytes_out) == (count, count)


def test_the_largest_heartbeat_fits_its_kinds_size_limit() -> None:
    record = sign_record(
        SIGNER,
        "heartbeat",
        roster_topic(GROUP),
        {
            "group_id": GROUP,
            "addr": ["ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535],
            "role": "leader",
            "round": MAX_INT64,
            "model_hash": bytes(32),
            "app_errors": MAX_INT64,
            "bytes_in": MAX_INT64,
            "bytes_out": MAX_INT64,
        },
        seq=MAX_INT64,
        now=NOW,
        ttl=3600,
    )
    assert len(record.blob) <= HEARTBEAT.max_bytes


@pytest.mark.parametrize("field", ["bytes_in", "bytes_out"])
@pytest.mark.parametrize("bad", [-1, 2**63, 2**64 - 1, 1.0, True, None, "1", b"\x01", [1]])
def test_a_traffic_count_that_is_not_a_count_is_refused_by_name(field: str, bad: Any) -> None:
    other = "bytes_out" if field == "bytes_in" else "bytes_in"
    blob = heartbeat(**{field: bad, other: 5})
    with pytest.raises(MalformedRecord, match=rf"\$\.body\.{field}"):
        verify_record(blob, now=NOW)
    store = RecordStore(clock=lambda: NOW)  # a peer asked to store it refuses it too
    with pytest.raises(MalformedRecord):
        store.offer(record_key(roster_topic(GROUP)), blob, "192.0.2.1")
    assert not store.records(record_key(roster_topic(GROUP)))


@pytest.mark.parametrize("alone", [{"bytes_in": 5}, {"bytes_out": 5}])
def test_one_traffic_count_without_the_other_is_refused(alone: dict[str, int]) -> None:
    with pytest.raises(MalformedRecord, match="both bytes_in and bytes_out or neither"):
        verify_record(heartbeat(**alone), now=NOW)
