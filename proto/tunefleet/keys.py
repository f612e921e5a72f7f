"""Ed25519 identities for nodes, researchers and the operator.

An :class:`Identity` holds a private key; its :attr:`Identity.key_id` (the first 16 bytes of
the SHA-256 of the raw public key, in hex) names it everywhere. Keys live in PEM files of mode
0600; :func:`load_or_create` makes one on first use.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tunefleet.errors import SignatureError, TunefleetError

__all__ = ["Identity", "key_id_of", "verify", "load_or_create", "load", "PUBLIC_KEY_SIZE"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def key_id_of(public_key: bytes) -> str:
    """The stable id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:32]


class Identity:
    """An Ed25519 private key with its public key and id."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the key to ``path`` with mode 0600, refusing to overwrite an existing file
        (FileExistsError). The file appears whole or not at all: it is written under another
        name and linked into place, so a crash never leaves an empty or partial key."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_pem())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # unlike a rename, refuses an existing file
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                self._save_in_place(path)  # a file system without hard links
        finally:
            tmp.unlink(missing_ok=True)

    def _save_in_place(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.to_pem())


def load(path: Path) -> Identity:
    """Read a private key file; raise :class:`TunefleetError` if it is not an Ed25519 key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TunefleetError(f"cannot read the Ed25519 key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TunefleetError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return Identity(key)


def load_or_create(path: Path) -> tuple[Identity, bool]:
    """Load the key at ``path``, or create it (mode 0600). Returns ``(identity, created)``."""
    if path.exists():
        return load(path), False
    identity = Identity.generate()
    try:
        identity.save(path)
    except FileExistsError:  # created concurrently by another process
        return load(path), False
    return identity, True


def verify(public_key: bytes, signature: bytes, data: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``public_key``'s over ``data``."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise SignatureError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"signature does not match for key {key_id_of(public_key)}") from None
