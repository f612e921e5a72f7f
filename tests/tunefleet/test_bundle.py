"""Training bundles: packing, verification, and safe unpacking of hostile archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tunefleet import bundle
from tunefleet.bundle import (
    MANIFEST_NAME,
    RESULTS_MARKER,
    digest_of,
    pack_directory,
    read_manifest,
    safe_unpack,
    sign_digest,
    verify_bundle,
)
from tunefleet.errors import BundleError, TunefleetError
from tunefleet.keys import Identity

MANIFEST = {"entrypoint": "train.py", "requirements": ["numpy"], "resources": {"gpus": 1}}


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def mallory() -> Identity:
    return Identity.generate()


def write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root``, by relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def everything(root: Path) -> set[str]:
    """Every entry (file, directory, link) under ``root``."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


KEPT = {
    "train.py": b"from tunefleet import trial\nprint(trial.params)\n",
    "requirements.txt": b"numpy\n",
    "pkg/__init__.py": b"",
    "pkg/model.py": b"import torch\n",
    "data/small.bin": bytes(range(256)) * 17,
    "run.sh": b"#!/bin/sh\necho hi\n",
}
DROPPED = {
    ".git/config": b"[core]\n",
    ".git/objects/ab/cdef": b"blob",
    "__pycache__/train.cpython-311.pyc": b"\x00pyc",
    "pkg/__pycache__/model.cpython-311.pyc": b"\x00pyc",
    ".venv/lib/site.py": b"venv",
    "pkg/stale.pyc": b"\x00pyc",
    "researcher.key": b"-----BEGIN PRIVATE KEY-----",
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write(src, {**KEPT, **DROPPED})
    (src / "run.sh").chmod(0o755)
    (src / "link.py").symlink_to(src / "train.py")
    return src


# --- packing and verification ------------------------------------------------------------------


def test_pack_verify_unpack_reproduces_files_and_manifest(
    tmp_path: Path, source: Path, alice: Identity
) -> None:
    signed = pack_directory(source, MANIFEST, alice)
    assert signed.digest == digest_of(signed.data) and signed.publisher_key == alice.public_key
    verify_bundle(signed.data, signed.digest, signed.publisher_key, signed.signature)
    assert read_manifest(signed.data) == MANIFEST

    target = tmp_path / "work"
    safe_unpack(signed.data, target)
    unpacked = tree(target)
    manifest = json.loads(unpacked.pop(MANIFEST_NAME))
    assert manifest == MANIFEST
    assert unpacked == KEPT  # exactly the kept files, byte for byte
    assert everything(target) >= set(KEPT)
    # The executable bit survives, nothing else does: owner-only permissions.
    assert stat.S_IMODE((target / "run.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "train.py").stat().st_mode) == 0o600


def test_excluded_entries_are_not_in_the_archive(source: Path, alice: Identity) -> None:
    signed = pack_directory(source, MANIFEST, alice)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(signed.data))) as tar:
        names = tar.getnames()
        assert all(m.isfile() for m in tar.getmembers())
    assert sorted(names) == sorted([MANIFEST_NAME, *KEPT])
    for name in names:
        parts = name.split("/")
        assert ".git" not in parts and "__pycache__" not in parts and ".venv" not in parts
        assert not name.endswith((".pyc", ".key")) and name != "link.py"


def test_a_manifest_file_in_the_directory_is_replaced(
    tmp_path: Path, source: Path, alice: Identity
) -> None:
    (source / MANIFEST_NAME).write_text(json.dumps({"entrypoint": "evil.py"}))
    signed = pack_directory(source, MANIFEST, alice)
    assert read_manifest(signed.data) == MANIFEST
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(signed.data))) as tar:
        assert tar.getnames().count(MANIFEST_NAME) == 1


def test_packing_is_deterministic(tmp_path: Path, source: Path, alice: Identity) -> None:
    first = pack_directory(source, MANIFEST, alice)
    second = pack_directory(source, MANIFEST, alice)
    assert first.data == second.data and first.digest == second.digest
    # A copy elsewhere, with other timestamps, names the same content.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(source, copy, symlinks=True)
    for path in copy.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_000_000, 1_000_000))
    assert pack_directory(copy, MANIFEST, alice).digest == first.digest
    # Manifest key order does not matter either.
    reordered = dict(reversed(list(MANIFEST.items())))
    assert pack_directory(source, reordered, alice).digest == first.digest


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda src: (src / "train.py").write_bytes(b"print(2)\n"), id="content"),
        pytest.param(lambda src: (src / "extra.py").write_bytes(b""), id="new-file"),
        pytest.param(lambda src: (src / "train.py").chmod(0o755), id="exec-bit"),
        pytest.param(lambda src: (src / "train.py").rename(src / "main.py"), id="rename"),
    ],
)
def test_the_digest_changes_with_the_content(
    source: Path, alice: Identity, change: Callable[[Path], Any]
) -> None:
    before = pack_directory(source, MANIFEST, alice).digest
    change(source)
    assert pack_directory(source, MANIFEST, alice).digest != before


def test_the_digest_changes_with_the_manifest(source: Path, alice: Identity) -> None:
    a = pack_directory(source, MANIFEST, alice)
    b = pack_directory(source, {**MANIFEST, "entrypoint": "other.py"}, alice)
    assert a.digest != b.digest


def test_packing_a_missing_directory_fails(tmp_path: Path, alice: Identity) -> None:
    with pytest.raises(BundleError):
        pack_directory(tmp_path / "nope", MANIFEST, alice)


def test_packing_over_the_size_limit_fails(
    tmp_path: Path, alice: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "big", {"data.bin": os.urandom(4096)})
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 1024)
    with pytest.raises(BundleError) as exc:
        pack_directory(tmp_path / "big", MANIFEST, alice)
    assert "1024" in str(exc.value)


@pytest.fixture
def signed(source: Path, alice: Identity) -> bundle.SignedBundle:
    return pack_directory(source, MANIFEST, alice)


@pytest.mark.parametrize("position", [0, 10, -1, "middle"])
def test_bytes_changed_after_signing_are_refused(
    signed: bundle.SignedBundle, position: Any
) -> None:
    data = bytearray(signed.data)
    index = len(data) // 2 if position == "middle" else position
    data[index] ^= 0x01
    with pytest.raises(BundleError) as exc:
        verify_bundle(bytes(data), signed.digest, signed.publisher_key, signed.signature)
    assert signed.digest in str(exc.value)


def test_truncated_or_extended_bytes_are_refused(signed: bundle.SignedBundle) -> None:
    for data in (signed.data[:-1], signed.data + b"\x00"):
        with pytest.raises(BundleError):
            verify_bundle(data, signed.digest, signed.publisher_key, signed.signature)


def test_resigned_tampered_bytes_need_the_publisher_key(
    signed: bundle.SignedBundle, mallory: Identity
) -> None:
    data = signed.data + b"\x00"
    digest = digest_of(data)  # the attacker recomputes the digest ...
    with pytest.raises(BundleError):  # ... but cannot sign it as the publisher
        verify_bundle(data, digest, signed.publisher_key, signed.signature)
    with pytest.raises(BundleError):
        verify_bundle(data, digest, signed.publisher_key, sign_digest(mallory, digest))


def test_a_signature_by_another_key_is_refused(
    signed: bundle.SignedBundle, mallory: Identity
) -> None:
    forged = sign_digest(mallory, signed.digest)
    with pytest.raises(BundleError):
        verify_bundle(signed.data, signed.digest, signed.publisher_key, forged)
    # ... and the publisher's signature does not make Mallory the publisher.
    with pytest.raises(BundleError):
        verify_bundle(signed.data, signed.digest, mallory.public_key, signed.signature)


def test_a_signature_without_the_bundle_domain_is_refused(
    signed: bundle.SignedBundle, alice: Identity
) -> None:
    bare = alice.sign(signed.digest.encode())
    with pytest.raises(BundleError):
        verify_bundle(signed.data, signed.digest, signed.publisher_key, bare)
    sign_again = sign_digest(alice, signed.digest)
    verify_bundle(signed.data, signed.digest, signed.publisher_key, sign_again)


@pytest.mark.parametrize("field", ["publisher_key", "signature"])
def test_malformed_key_or_signature_is_a_bundle_error(
    signed: bundle.SignedBundle, field: str
) -> None:
    args = {"publisher_key": signed.publisher_key, "signature": signed.signature, field: b"\x01"}
    with pytest.raises(BundleError):
        verify_bundle(signed.data, signed.digest, **args)


# --- hand-crafted archives ---------------------------------------------------------------------


def member(name: str, data: bytes = b"x", **attrs: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def archive(members: Iterable[tuple[tarfile.TarInfo, bytes]], trailer: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue() + trailer, mtime=0)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """``(root, target)``: refusals must leave ``root`` as it was and ``target`` empty."""
    root = tmp_path / "sandbox"
    write(root, {"outside/keep.txt": b"keep"})
    return root, root / "outside" / "work" / "target"


def assert_nothing_written(root: Path, target: Path) -> None:
    assert tree(root) == {"outside/keep.txt": b"keep"}
    if target.exists():
        assert list(target.iterdir()) == []
    assert everything(root) <= {"outside", "outside/keep.txt", "outside/work",
                                "outside/work/target"}


def test_a_crafted_archive_of_plain_files_unpacks(sandbox: tuple[Path, Path]) -> None:
    root, target = sandbox
    data = archive([member("a.txt", b"A"), member("d", type=tarfile.DIRTYPE),
                    member("d/e/b.txt", b"B", mode=0o755)])
    safe_unpack(data, target)
    assert tree(target) == {"a.txt": b"A", "d/e/b.txt": b"B"}
    assert stat.S_IMODE((target / "d/e/b.txt").stat().st_mode) == 0o700


def _escape_members(root: Path) -> dict[str, list[tuple[tarfile.TarInfo, bytes]]]:
    outside = root / "outside"
    return {
        "absolute": [member(str(outside / "abs.txt"))],
        "absolute-root": [member("/abs.txt")],
        "dotdot": [member("../escaped.txt")],
        "dotdot-deep": [member("../../../escaped.txt")],
        "dotdot-middle": [member("sub/../../escaped.txt")],
        "backslash": [member("..\\escaped.txt")],
        "symlink": [member("link", type=tarfile.SYMTYPE, linkname=str(outside)),
                    member("link/pwned.txt")],
        "symlink-relative": [member("up", type=tarfile.SYMTYPE, linkname="..")],
        "hardlink": [member("hard", type=tarfile.LNKTYPE, linkname=str(outside / "keep.txt"))],
        "hardlink-relative": [member("a.txt"), member("b.txt", type=tarfile.LNKTYPE,
                                                      linkname="a.txt")],
        "chardev": [member("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "blockdev": [member("sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)],
        "fifo": [member("pipe", type=tarfile.FIFOTYPE)],
    }


@pytest.mark.parametrize("case", list(_escape_members(Path("/x"))))
@pytest.mark.parametrize("benign_first", [False, True], ids=["alone", "after-benign"])
def test_safe_unpack_refuses_unsafe_members(
    sandbox: tuple[Path, Path], case: str, benign_first: bool
) -> None:
    root, target = sandbox
    members = _escape_members(root)[case]
    if benign_first:  # nothing is written before every member has been checked
        members = [member("ok.txt", b"ok"), member("ok", type=tarfile.DIRTYPE), *members]
    with pytest.raises(BundleError):
        safe_unpack(archive(members), target)
    assert_nothing_written(root, target)
    assert not (root / "escaped.txt").exists() and not (root.parent / "escaped.txt").exists()


def test_safe_unpack_refuses_too_many_members(
    sandbox: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, target = sandbox
    monkeypatch.setattr(bundle, "MAX_MEMBERS", 3)
    files = [member(f"f{i}.txt") for i in range(4)]
    with pytest.raises(BundleError) as exc:
        safe_unpack(archive(files), target)
    assert "3" in str(exc.value)
    assert_nothing_written(root, target)
    safe_unpack(archive(files[:3]), target)  # exactly at the limit is fine
    assert len(tree(target)) == 3


def test_safe_unpack_refuses_too_many_bytes(
    sandbox: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, target = sandbox
    monkeypatch.setattr(bundle, "MAX_UNPACKED_BYTES", 1000)
    files = [member("a.bin", b"a" * 600), member("b.bin", b"b" * 600)]
    with pytest.raises(BundleError) as exc:
        safe_unpack(archive(files), target)
    assert "1000" in str(exc.value)
    assert_nothing_written(root, target)
    safe_unpack(archive([member("a.bin", b"a" * 1000)]), target)  # exactly at the limit
    assert tree(target) == {"a.bin": b"a" * 1000}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not gzip at all", id="text"),
        pytest.param(b"\x1f\x8b", id="truncated-header"),
        pytest.param(gzip.compress(b"not a tar archive" * 100)[:-8], id="truncated-stream"),
        pytest.param(gzip.compress(b"not a tar archive, just some text" * 40), id="gzip-not-tar"),
        pytest.param(gzip.compress(b""), id="gzip-of-nothing"),
    ],
)
def test_safe_unpack_refuses_non_bundles(sandbox: tuple[Path, Path], data: bytes) -> None:
    root, target = sandbox
    with pytest.raises(BundleError):
        safe_unpack(data, target)
    assert_nothing_written(root, target)


def test_safe_unpack_refuses_an_uncompressed_tar(sandbox: tuple[Path, Path]) -> None:
    root, target = sandbox
    raw = gzip.decompress(archive([member("a.txt")]))
    with pytest.raises(BundleError):
        safe_unpack(raw, target)
    assert_nothing_written(root, target)


def _corrupt_deflate() -> bytes:
    data = bytearray(archive([member("a.bin", bytes(range(256)) * 64)]))
    data[20] ^= 0xFF  # inside the deflate stream, past the 10-byte gzip header
    return bytes(data)


def test_safe_unpack_refuses_a_corrupt_deflate_stream(sandbox: tuple[Path, Path]) -> None:
    root, target = sandbox
    with pytest.raises(BundleError):
        safe_unpack(_corrupt_deflate(), target)
    assert_nothing_written(root, target)


def test_read_manifest_refuses_a_corrupt_deflate_stream() -> None:
    with pytest.raises(BundleError):
        read_manifest(_corrupt_deflate())


@pytest.mark.parametrize(
    "names",
    [["a.txt", "a.txt"], ["a", "a/b.txt"], [".", "x"]],
    ids=["same-file-twice", "file-then-child", "file-named-dot"],
)
def test_safe_unpack_refuses_conflicting_members(
    sandbox: tuple[Path, Path], names: list[str]
) -> None:
    root, target = sandbox
    with pytest.raises(BundleError):
        safe_unpack(archive([member(name) for name in names]), target)
    assert_nothing_written(root, target)


def test_safe_unpack_bounds_the_decompressed_size(
    sandbox: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, target = sandbox
    monkeypatch.setattr(bundle, "MAX_UNPACKED_BYTES", 64 * 1024)
    # One tiny member, then 8 MiB of zeros after the end-of-archive marker: ~8 KiB gzipped.
    data = archive([member("a.txt")], trailer=bytes(8 * 1024 * 1024))
    assert len(data) < 64 * 1024
    with pytest.raises(BundleError):
        safe_unpack(data, target)
    assert_nothing_written(root, target)


def test_read_manifest_refusals(alice: Identity) -> None:
    with pytest.raises(BundleError):
        read_manifest(archive([member("train.py")]))  # no manifest
    with pytest.raises(BundleError):
        read_manifest(archive([member(MANIFEST_NAME, b"{not json")]))
    with pytest.raises(BundleError):
        read_manifest(archive([member(MANIFEST_NAME, b"[1, 2]")]))  # not an object
    with pytest.raises(BundleError):
        read_manifest(archive([member(MANIFEST_NAME, type=tarfile.DIRTYPE)]))
    with pytest.raises(BundleError):
        read_manifest(b"garbage")
    manifest = {"entrypoint": "x.py"}
    assert read_manifest(archive([member(MANIFEST_NAME, json.dumps(manifest).encode())])) == (
        manifest
    )


def test_bundle_error_is_a_tunefleet_error() -> None:
    assert issubclass(BundleError, TunefleetError)


def test_earlier_results_beside_the_study_stay_out_of_the_bundle(source: Path,
                                                                 alice: Identity) -> None:
    before = pack_directory(source, MANIFEST, alice)
    results = source / "results" / "d463ce1b21e5"
    results.mkdir(parents=True)
    (results / "best.json").write_text('{"best": {"params": {"lr": 0.01}}}')
    (source / "results" / RESULTS_MARKER).write_text("written by tunefleet run\n")
    (source / "lib" / "results").mkdir(parents=True)  # code of the researcher's, so named
    (source / "lib" / "results" / "__init__.py").write_text("X = 1\n")
    after = pack_directory(source, MANIFEST, alice)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(after.data))) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.startswith("results")]
    assert "lib/results/__init__.py" in names
    (source / "results" / RESULTS_MARKER).unlink()  # a folder tunefleet did not mark is code
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(
            pack_directory(source, MANIFEST, alice).data))) as tar:
        assert "results/d463ce1b21e5/best.json" in tar.getnames()
    assert before.digest != after.digest  # lib/results was added
