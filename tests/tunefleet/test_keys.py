"""Ed25519 identities: key ids, key files, and signature verification."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tunefleet.errors import SignatureError, TunefleetError
from tunefleet.keys import PUBLIC_KEY_SIZE, Identity, key_id_of, load, load_or_create, verify


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_id_is_the_documented_hash_of_the_public_key(alice: Identity) -> None:
    assert len(alice.public_key) == PUBLIC_KEY_SIZE
    expected = hashlib.sha256(alice.public_key).digest()[:16].hex()
    assert alice.key_id == key_id_of(alice.public_key) == expected


def test_generated_identities_are_distinct(alice: Identity, bob: Identity) -> None:
    assert alice.public_key != bob.public_key and alice.key_id != bob.key_id


def test_save_then_load_gives_the_same_key(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "nested" / "dir" / "alice.key"  # parents are created
    alice.save(path)
    loaded = load(path)
    assert loaded.public_key == alice.public_key and loaded.key_id == alice.key_id
    # The loaded key signs: its signature verifies under the original public key.
    verify(alice.public_key, loaded.sign(b"hello"), b"hello")


def test_key_file_mode_is_0600(tmp_path: Path, alice: Identity) -> None:
    old = os.umask(0)  # even with a permissive umask, nobody else may read the key
    try:
        alice.save(tmp_path / "a.key")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "a.key") == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path, alice: Identity, bob: Identity) -> None:
    path = tmp_path / "id.key"
    alice.save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        bob.save(path)
    assert path.read_bytes() == before
    assert load(path).key_id == alice.key_id


def test_a_save_that_fails_while_writing_leaves_no_key_file(
        tmp_path: Path, alice: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    # before, the key's own file was created first and then written: a crash in between left
    # an empty key, and every later start failed on it
    def no_room(self: Identity) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Identity, "to_pem", no_room)
    with pytest.raises(OSError, match="No space"):
        alice.save(tmp_path / "id.key")
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_without_hard_links_still_gets_the_key(
        tmp_path: Path, alice: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    alice.save(tmp_path / "id.key")
    assert load(tmp_path / "id.key").key_id == alice.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["id.key"] and mode_of(tmp_path / "id.key") == 0o600
    with pytest.raises(FileExistsError):
        alice.save(tmp_path / "id.key")


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "home" / "node.key"
    first, created = load_or_create(path)
    assert created is True and path.exists() and mode_of(path) == 0o600
    second, created_again = load_or_create(path)
    assert created_again is False
    assert second.public_key == first.public_key and second.key_id == first.key_id


def test_load_or_create_loads_an_existing_key(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "k.key"
    alice.save(path)
    identity, created = load_or_create(path)
    assert created is False and identity.key_id == alice.key_id


def _pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ec"),
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="rsa"),
        pytest.param(ed448.Ed448PrivateKey.generate, id="ed448"),
    ],
)
def test_loading_a_non_ed25519_key_gives_tunefleet_error(tmp_path: Path, make: object) -> None:
    path = tmp_path / "other.key"
    path.write_bytes(_pem(make()))  # type: ignore[operator]
    with pytest.raises(TunefleetError) as exc:
        load(path)
    assert str(path) in str(exc.value) and "Ed25519" in str(exc.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_loading_garbage_gives_tunefleet_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(TunefleetError) as exc:
        load(path)
    assert str(path) in str(exc.value)


def test_loading_an_encrypted_key_gives_tunefleet_error(tmp_path: Path, alice: Identity) -> None:
    path = tmp_path / "enc.key"
    key = serialization.load_pem_private_key(alice.to_pem(), password=None)
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))
    with pytest.raises(TunefleetError):
        load(path)


def test_loading_a_missing_file_gives_tunefleet_error(tmp_path: Path) -> None:
    with pytest.raises(TunefleetError):
        load(tmp_path / "missing.key")


def test_load_or_create_does_not_replace_a_broken_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.key"
    path.write_bytes(b"junk")
    with pytest.raises(TunefleetError):
        load_or_create(path)
    assert path.read_bytes() == b"junk"


# --- verify ------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=256))
def test_a_signature_verifies_over_its_own_data(alice: Identity, data: bytes) -> None:
    verify(alice.public_key, alice.sign(data), data)


def test_verify_rejects_the_wrong_key(alice: Identity, bob: Identity) -> None:
    with pytest.raises(SignatureError) as exc:
        verify(bob.public_key, alice.sign(b"data"), b"data")
    assert bob.key_id in str(exc.value)


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=64), position=st.integers(0, 63), bit=st.integers(0, 7))
def test_verify_rejects_tampered_data(
    alice: Identity, data: bytes, position: int, bit: int
) -> None:
    signature = alice.sign(data)
    tampered = bytearray(data)
    tampered[position % len(data)] ^= 1 << bit
    with pytest.raises(SignatureError):
        verify(alice.public_key, signature, bytes(tampered))
    with pytest.raises(SignatureError):
        verify(alice.public_key, signature, data + b"\x00")


@settings(max_examples=30, deadline=None)
@given(position=st.integers(0, 63), bit=st.integers(0, 7))
def test_verify_rejects_a_tampered_signature(alice: Identity, position: int, bit: int) -> None:
    signature = bytearray(alice.sign(b"payload"))
    signature[position] ^= 1 << bit
    with pytest.raises(SignatureError):
        verify(alice.public_key, bytes(signature), b"payload")


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_verify_rejects_a_signature_of_the_wrong_length(alice: Identity, length: int) -> None:
    signature = (alice.sign(b"x") * 2)[:length]
    with pytest.raises(SignatureError) as exc:
        verify(alice.public_key, signature, b"x")
    assert str(length) in str(exc.value)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_verify_rejects_a_public_key_of_the_wrong_length(alice: Identity, length: int) -> None:
    key = (alice.public_key * 3)[:length]
    with pytest.raises(SignatureError) as exc:
        verify(key, alice.sign(b"x"), b"x")
    assert str(length) in str(exc.value)


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\xff" * 32, b"\xee" * 32])
def test_verify_rejects_degenerate_public_keys(alice: Identity, key: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(key, alice.sign(b"x"), b"x")
