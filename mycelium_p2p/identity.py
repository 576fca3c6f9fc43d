"""Ed25519 identities: a node's key pair and the DHT id derived from it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import IdentityError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
NODE_ID_SIZE = 20  # Kademlia's 160-bit id space
_NODE_ID_DOMAIN = b"mycelium-p2p/node-id/v1\x00"
KEY_FILE = "node.key"


def node_id_for(public_key: bytes) -> bytes:
    """The 160-bit DHT node id of a public key: nobody can choose their place in the id space."""
    return hashlib.sha1(_NODE_ID_DOMAIN + public_key).digest()


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair. ``public_key`` is the raw 32-byte key peers see."""

    private_key: Ed25519PrivateKey = field(repr=False)
    public_key: bytes

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> Identity:
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=key, public_key=raw)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """A deterministic identity from 32 bytes (tests and benchmarks)."""
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls.from_private_key(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the private key to ``path`` with mode 0600, refusing to overwrite."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise IdentityError(f"{path} already exists; refusing to overwrite a key") from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.private_bytes())

    @classmethod
    def load(cls, path: Path) -> Identity:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read key file {path}: {exc.strerror}") from exc
        if len(raw) != 32:
            raise IdentityError(f"{path} is not an Ed25519 key file (expected 32 bytes)")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise IdentityError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            )
        return cls.from_seed(raw)

    @classmethod
    def load_or_create(cls, data_dir: Path, name: str = KEY_FILE) -> Identity:
        """The identity kept in ``data_dir/name``, created on first use."""
        path = Path(data_dir) / name
        if path.exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity


def default_data_dir() -> Path:
    """``$MYCELIUM_DATA_DIR``, else ``$XDG_DATA_HOME/mycelium-p2p``, else ``~/.local/share/...``."""
    env = os.environ.get("MYCELIUM_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "mycelium-p2p"
