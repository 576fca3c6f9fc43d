"""Valid encodings the mutations start from, built once from fixed keys at a fixed time."""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from mycelium_p2p.fl.npy import from_ndarray
from mycelium_p2p.fl.wire import encode_content
from mycelium_p2p.group import messages as m
from mycelium_p2p.group.invite import issue_invite
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import GroupMetrics, Record, index_topic, sign_advert, sign_record
from mycelium_p2p.records.charter import GROUP_ID_HEX_LEN, GroupCharter
from mycelium_p2p.records.kinds import roster_topic
from mycelium_p2p.records.leadership import LeaderCert, founding_cert, sign_commit, sign_vote

NOW = 1.8e9  # the fuzzed nodes' clock: records are signed at this time


def identity(n: int) -> Identity:
    """Fixed key number ``n``."""
    return Identity.from_seed(hashlib.sha256(b"fuzz-key-%d" % n).digest())


@dataclass(frozen=True)
class Corpus:
    """Valid objects of every kind a peer sends, with the keys that signed them."""

    founder: Identity
    member: Identity
    charter: GroupCharter
    cert: LeaderCert
    cert2: LeaderCert  # term 2, voted by founder and member
    advert: Record
    heartbeat: Record
    invite: str
    headers: dict[str, dict[str, Any]]  # message class name -> a valid header
    content: tuple[list[Any], list[bytes]]  # a model, as fl.wire encodes it


def _group_id_in(topic: str, avoid: str) -> str:
    """A well-formed group id (another group's) whose index topic is ``topic``."""
    return next(
        gid
        for gid in (f"{i:0{GROUP_ID_HEX_LEN}x}" for i in range(1000))
        if gid != avoid and index_topic(gid) == topic
    )


@functools.lru_cache(maxsize=1)
def corpus() -> Corpus:
    founder, member = identity(0), identity(1)
    charter = GroupCharter.found(
        founder, name="fuzz", task="digits", capacity=4, now=NOW - 100, nonce=b"fuzzfuzz"
    )
    gid = charter.group_id
    cert = founding_cert(founder, gid)
    votes = [(k.public_key, sign_vote(k, gid, 2, member.public_key)) for k in (founder, member)]
    cert2 = LeaderCert(gid, 2, member.public_key, votes)
    advert = sign_advert(
        founder,
        charter=charter,
        cert=cert,
        address=("127.0.0.1", 9000),
        metrics=GroupMetrics(0.5, 1.0, 3, 2, 4),
        seq=5,
        now=NOW,
        ttl=60,
        ended=[(_group_id_in(index_topic(gid), avoid=gid), 2)],
    )
    heartbeat = sign_record(
        member,
        "heartbeat",
        roster_topic(gid),
        {
            "group_id": gid,
            "addr": ["127.0.0.1", 9001],
            "role": "member",
            "round": 3,
            "model_hash": bytes(32),
            "bytes_in": 123_456,
            "bytes_out": 2**63 - 1,
        },
        seq=7,
        now=NOW,
        ttl=60,
    )
    invite = issue_invite(founder, gid, member.public_key, now=NOW, ttl=600)
    content = encode_content(
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {
                        "w": from_ndarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
                        "b": from_ndarray(np.zeros(3, dtype=np.int64)),
                    }
                ),
                "config": ConfigRecord({"lr": 0.1, "epochs": 1, "name": "x"}),
                "metrics": MetricRecord({"acc": 0.5, "num-examples": 10}),
            }
        )
    )
    return Corpus(
        founder, member, charter, cert, cert2, advert, heartbeat, invite,
        _headers(gid, founder, member, cert, content[0]), content,
    )  # fmt: skip


def _headers(
    gid: str, founder: Identity, member: Identity, cert: LeaderCert, content: list[Any]
) -> dict[str, dict[str, Any]]:
    addr = ("127.0.0.1", 9000)
    roster = [(founder.public_key, "127.0.0.1", 9000, 3), (member.public_key, "::1", 9001, 2)]
    c, digest = cert.encode(), bytes(32)
    proof3, proof4 = (sign_commit(founder, cert, r, digest).encode() for r in (3, 4))
    messages: list[Any] = [
        m.Join(gid=gid, addr=addr, invite="myc-invite-x"),
        m.Heartbeat(gid=gid, term=1, round=3, addr=addr),
        m.VoteRequest(gid=gid, term=2, round=3, rv=(1, 4), addr=addr, proof=proof3),
        m.Announce(gid=gid, term=1, addr=addr, cert=c),
        m.Commit(gid=gid, term=1, cert=c, round=4, digest=digest, content=content, proof=proof4),
        m.RosterPush(gid=gid, term=1, cert=c, roster=roster, rv=(1, 5)),
        m.Redirect(gid=gid, term=1, cert=c, addr=addr, key=member.public_key),
        m.Resign(gid=gid, term=1, roster=roster, rv=(1, 5)),
        m.Empty(gid=gid),
        m.JoinReply(
            charter=b"c" * 100, term=1, cert=c, roster=roster, rv=(1, 2), round=3,
            digest=digest, content=content,
        ),
        m.HeartbeatReply(term=1, cert=c, roster=roster, rv=(1, 2), round=3),
        m.VoteReply(granted=True, term=2, why="", vote=bytes(64)),
        m.LeaderReply(term=1, leader=founder.public_key, addr=addr, cert=c),
        m.ModelReply(round=3, digest=digest, content=content, proof=proof3),
        m.RoundReply(round=3),
    ]  # fmt: skip
    return {type(msg).__name__: msgspec.to_builtins(m.wire(msg)) for msg in messages}


def frame_bytes(header: dict[str, Any], segments: list[bytes]) -> bytes:
    """A frame as ``FrameSocket.write_frame`` puts it on the stream."""
    head = msgspec.msgpack.encode({**header, "seg": [len(s) for s in segments]})
    return struct.pack("!I", len(head)) + head + b"".join(segments)


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, x=x, y=y)
    return out.getvalue()


def npy_bytes(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """An ``.npy`` file whose header says ``shape`` and ``descr``, whatever ``data`` holds."""
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def npz_members(x: bytes, y: bytes) -> bytes:
    """An ``.npz`` archive of ``x.npy`` and ``y.npy`` as given."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x.npy", x)
        archive.writestr("y.npy", y)
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def npz_seeds() -> tuple[bytes, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    return (
        npz_bytes(x, y),
        npz_bytes(x.reshape(6, 2, 2), y.astype(np.float64)),
        npz_bytes(x[:, :1].astype(np.int16), y.astype(np.uint8)),
    )


CSV_SEED = "f1,f2,label\n0.5,1.5,0\n-1,2e3,1\n3,4,2\n"
TOML_SEED = """
[join]
bootstrap = ["127.0.0.1:8468"]
port = 8470
task = "digits"
data-shard = "0/4"
capacity = 10
evaluation-interval = 30.0

[groups]
bootstrap = ["127.0.0.1:8468"]
timeout = 5.0
"""
PEERS_SEED = "# seeds\n127.0.0.1:8468\n[::1]:8469\nlocalhost\n"
