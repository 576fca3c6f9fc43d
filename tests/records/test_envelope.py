"""Signing and verifying records: every way a record can be refused."""

from __future__ import annotations

import time
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium_p2p.errors import (
    BadSignature,
    KeyBindingError,
    MalformedRecord,
    ProofError,
    RecordExpired,
    RecordFromFuture,
    RecordTooLarge,
)
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import (
    MAX_RECORD_BYTES,
    GroupAdvert,
    GroupMetrics,
    VerifiedBlobs,
    best_per_signer,
    next_seq,
    record_key,
    sign_advert,
    sign_record,
    verify_record,
)
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.records.envelope import RECORD_DOMAIN
from mycelium_p2p.records.leadership import LeaderCert, founding_cert, sign_vote
from mycelium_p2p.testing.records import make_advert, payload_of, resign, tampered

NOW = 1_800_000_000.0


def test_signed_advert_round_trips() -> None:
    group = Identity.generate()
    record = make_advert(group, now=NOW, accuracy=0.75)
    again = verify_record(record.blob, now=NOW + 1, key=record.key)
    assert again == record
    advert = GroupAdvert.from_record(again)
    assert advert.metrics.accuracy == 0.75
    assert advert.leader_key == group.public_key == advert.founder
    assert len(record.blob) <= MAX_RECORD_BYTES


def test_forged_signature_is_refused() -> None:
    record = make_advert(now=NOW)
    raw, _sig = msgpack.unpackb(record.blob, raw=False)
    forged = msgpack.packb([raw, bytes(64)], use_bin_type=True)
    with pytest.raises(BadSignature):
        verify_record(forged, now=NOW, key=record.key)
    other = Identity.generate()
    with pytest.raises(BadSignature):
        verify_record(
            msgpack.packb([raw, other.sign(RECORD_DOMAIN + raw)]), now=NOW, key=record.key
        )


def test_tampered_field_is_refused() -> None:
    record = make_advert(now=NOW, accuracy=0.1)
    with pytest.raises(BadSignature):
        verify_record(tampered(record, 0.99), now=NOW, key=record.key)


def test_record_under_someone_elses_key_is_refused() -> None:
    record = make_advert(now=NOW)
    with pytest.raises(KeyBindingError):
        verify_record(record.blob, now=NOW, key=record_key("groups/0", b"x" * 32))


def test_an_advert_signed_by_anyone_but_the_proven_leader_is_refused() -> None:
    """A signer cannot advertise a group it does not lead: the certificate names the leader."""
    victim = make_advert(now=NOW)
    attacker = Identity.generate()
    payload = payload_of(victim.blob)
    payload["signer"] = attacker.public_key
    with pytest.raises(MalformedRecord, match="leader"):
        verify_record(resign(attacker, payload), now=NOW)


def test_an_advert_with_a_certificate_it_did_not_win_is_refused() -> None:
    """A member that makes up a term 2 certificate of its own votes: signatures of keys that
    are not the ones they claim, or a founder term claimed by another key."""
    victim = make_advert(now=NOW)
    payload = payload_of(victim.blob)
    charter = GroupCharter.verify(payload["body"]["charter"])
    usurper = Identity.generate()
    forged = LeaderCert(
        charter.group_id,
        2,
        usurper.public_key,
        [(charter.founder, sign_vote(usurper, charter.group_id, 2, usurper.public_key))],
    )
    payload.update(signer=usurper.public_key)
    payload["body"].update(term=2, cert=forged.encode())
    with pytest.raises(ProofError, match="does not verify"):
        verify_record(resign(usurper, payload), now=NOW)
    self_made = founding_cert(usurper, charter.group_id)  # "term 1 is mine"
    payload["body"].update(term=1, cert=self_made.encode())
    with pytest.raises(ProofError, match="founder"):
        verify_record(resign(usurper, payload), now=NOW)


def test_expired_and_future_records_are_refused() -> None:
    record = make_advert(now=NOW, ttl=60)
    with pytest.raises(RecordExpired):
        verify_record(record.blob, now=NOW + 61)
    with pytest.raises(RecordFromFuture):
        verify_record(record.blob, now=NOW - 31, skew=30)
    verify_record(record.blob, now=NOW - 29, skew=30)  # within skew: fine


def test_lifetime_beyond_the_kind_limit_is_refused() -> None:
    with pytest.raises(MalformedRecord, match="at most"):
        make_advert(now=NOW, ttl=10 * 3600)


def test_oversized_record_is_refused() -> None:
    group = Identity.generate()
    payload = payload_of(make_advert(group, now=NOW).blob)
    payload["body"]["charter"] = b"x" * 5000
    with pytest.raises(RecordTooLarge):
        verify_record(resign(group, payload), now=NOW)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xc1",
        b"\x92\x01\x02",
        msgpack.packb([b"x", b"y"]),
        msgpack.packb({"a": 1}),
        msgpack.packb([b"\x81\xa1a\x01", bytes(64)]),
    ],
)
def test_malformed_bytes_are_refused(blob: bytes) -> None:
    with pytest.raises(MalformedRecord):
        verify_record(blob, now=NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.pop("seq"),
        lambda p: p.update(extra=1),
        lambda p: p.update(kind="no-such-kind"),
        lambda p: p.update(seq=-1),
        lambda p: p.update(owned=True),
        lambda p: p["body"].pop("charter"),
        lambda p: p["body"].update(charter=b"whatever"),
        lambda p: p["body"].update(term=2),
        lambda p: p["body"]["metrics"].update(capacity=9),
        lambda p: p["body"]["metrics"].update(accuracy=1.5),
        lambda p: p["body"]["metrics"].update(members=11),
        lambda p: p["body"].update(leader=["127.0.0.1", 70000]),
        lambda p: p.update(topic="groups/9"),
        lambda p: p.update(exp=p["iat"] - 1),
    ],
)
def test_schema_violations_are_refused(mutate) -> None:
    group = Identity.generate()
    payload = payload_of(make_advert(group, now=NOW).blob)
    mutate(payload)
    with pytest.raises((MalformedRecord, ProofError)):
        verify_record(resign(group, payload), now=NOW)


def test_signing_a_bad_body_fails_at_the_signer() -> None:
    with pytest.raises(MalformedRecord):
        sign_record(Identity.generate(), "advert", "groups/0", {"x": 1}, seq=1, now=NOW, ttl=5)


def test_best_per_signer_is_order_independent() -> None:
    group = Identity.generate()
    versions = [make_advert(group, seq=s, now=NOW) for s in (3, 1, 2)]
    other = make_advert(now=NOW)
    for order in ([*versions, other], [other, *reversed(versions)]):
        best = best_per_signer(order)
        assert best[group.public_key].seq == 3
        assert best[other.signer] == other


def test_next_seq_always_grows() -> None:
    assert next_seq(0, NOW) == int(NOW * 1000)
    assert next_seq(int(NOW * 1000) + 5, NOW) == int(NOW * 1000) + 6


names = st.text(min_size=1, max_size=64)


@settings(max_examples=60, deadline=None)
@given(
    name=names,
    task=names,
    accuracy=st.floats(0, 1),
    loss=st.floats(0, 1e6),
    round_=st.integers(0, 2**40),
    capacity=st.integers(1, 32),
    seq=st.integers(0, 2**62),
    port=st.integers(0, 65535),
)
def test_any_valid_advert_round_trips(
    name: str,
    task: str,
    accuracy: float,
    loss: float,
    round_: int,
    capacity: int,
    seq: int,
    port: int,
) -> None:
    leader = Identity.from_seed(bytes(32))
    metrics = GroupMetrics(accuracy, loss, round_, capacity // 2, capacity)
    try:
        charter = GroupCharter.found(
            leader, name=name, task=task, policy="invite-only", capacity=capacity, now=NOW
        )
    except ProofError:
        return  # names of 64 characters can exceed 64 bytes in UTF-8; refused at founding
    record = sign_advert(
        leader,
        charter=charter,
        cert=founding_cert(leader, charter.group_id),
        address=("10.0.0.1", port),
        metrics=metrics,
        seq=seq,
        now=NOW,
        ttl=300,
    )
    advert = GroupAdvert.from_record(verify_record(record.blob, now=NOW, key=record.key))
    assert (advert.name, advert.task, advert.metrics, advert.seq) == (name, task, metrics, seq)
    assert (advert.group_id, advert.policy, advert.term) == (charter.group_id, "invite-only", 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_random_bytes_never_verify_and_never_crash(blob: bytes) -> None:
    from mycelium_p2p.errors import RecordError

    with pytest.raises(RecordError):
        verify_record(blob, now=time.time())


# Any msgpack value, of any type, including the edge cases a schema must refuse.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.binary(max_size=80),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=3),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def valid_payloads() -> tuple[Identity, dict[str, bytes]]:
    """One signer's valid advert and heartbeat payloads, as msgpack (decoded afresh per use)."""
    from mycelium_p2p.records import roster_topic

    signer = Identity.generate()
    advert = make_advert(signer, now=NOW)
    body = {
        "group_id": GroupAdvert.from_record(advert).group_id,
        "addr": ["127.0.0.1", 7000],
        "role": "member",
        "round": 3,
        "model_hash": bytes(32),
    }
    topic = roster_topic(body["group_id"])
    heartbeat = sign_record(signer, "heartbeat", topic, body, seq=1, now=NOW, ttl=90)
    return signer, {
        kind: msgpack.unpackb(record.blob, raw=False)[0]
        for kind, record in (("advert", advert), ("heartbeat", heartbeat))
    }


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place in a decoded payload: map entries and array items, nested."""
    found = [path] if path else []
    if isinstance(value, dict):
        for name, item in value.items():
            found += _paths(item, (*path, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


def _same_type(old: object, new: object) -> bool:
    """Whether ``new`` could stand where ``old`` stood (an int may stand for a float)."""
    if isinstance(old, float):
        return type(new) in (float, int)
    return type(new) is type(old)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(["advert", "heartbeat"]), data=st.data())
def test_mutated_payloads_are_refused_as_record_errors(
    valid_payloads: tuple[Identity, dict[str, bytes]], kind: str, data: st.DataObject
) -> None:
    """Change, drop or add one field anywhere in a valid payload, re-sign it with the right key:
    verifying it raises a ``RecordError`` (never another exception); it can verify only when
    the new value has the old one's type (say, another accuracy in range)."""
    from mycelium_p2p.errors import RecordError

    signer, payloads = valid_payloads
    payload = msgpack.unpackb(payloads[kind], raw=False)
    *parents, last = data.draw(st.sampled_from(_paths(payload)), label="path")
    container = payload
    for step in parents:
        container = container[step]
    action = data.draw(st.sampled_from(["replace", "drop", "add"]), label="action")
    old = container[last]
    if action == "replace":
        container[last] = data.draw(values, label="value")
    elif action == "drop":
        del container[last]  # a list loses an item: a tuple of the wrong length
    elif isinstance(container, dict):
        container[data.draw(st.text(max_size=8).filter(lambda k: k not in container))] = 0
    else:
        container.append(data.draw(values, label="value"))
    try:
        verify_record(resign(signer, payload), now=NOW)
    except RecordError:
        return
    assert action == "replace" and _same_type(old, container[last]), (action, old, container)


def test_verified_blobs_skip_a_repeat_check_but_never_the_lifetime_or_the_key() -> None:
    verified = VerifiedBlobs()
    record = make_advert(now=NOW, ttl=60)
    verify_record(record.blob, now=NOW, key=record.key, verified=verified)
    with mock.patch("mycelium_p2p.records.envelope.verify_signature") as signature:
        assert verify_record(record.blob, now=NOW + 1, key=record.key, verified=verified) == record
        signature.assert_not_called()
        with pytest.raises(RecordExpired):
            verify_record(record.blob, now=NOW + 61, key=record.key, verified=verified)
        with pytest.raises(KeyBindingError):
            verify_record(record.blob, now=NOW, key=b"x" * 20, verified=verified)


def test_verified_blobs_hold_only_what_verified_and_only_so_many() -> None:
    verified = VerifiedBlobs(size=2)
    record = make_advert(now=NOW, accuracy=0.1)
    forged = tampered(record, 0.99)
    for _ in range(2):
        with pytest.raises(BadSignature):
            verify_record(forged, now=NOW, key=record.key, verified=verified)
    assert len(verified) == 0
    blobs = [make_advert(now=NOW).blob for _ in range(3)]
    for blob in blobs:
        verify_record(blob, now=NOW, verified=verified)
    assert len(verified) == 2
    assert VerifiedBlobs.digest(blobs[0]) not in verified  # the oldest went
    assert VerifiedBlobs.digest(blobs[2]) in verified
