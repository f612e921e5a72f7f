"""Training bundles: a directory packed into a tar, content-addressed and signed.

A bundle is an uncompressed-then-gzipped tar of the study's directory with a manifest
(``tunefleet-manifest.json``: entrypoint, requirements, resources) at its root. Its digest is
the SHA-256 of the bundle bytes; the publisher signs ``"tunefleet-bundle-v1\\0" || digest``.

:func:`verify_bundle` checks the digest and the signature; :func:`safe_unpack` refuses anything
that could escape the target directory (absolute paths, ``..``, links, device files) and
archives over the size or member limits. Nothing is written before a member has been checked.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tunefleet.errors import BundleError
from tunefleet.keys import Identity, verify

__all__ = [
    "MANIFEST_NAME",
    "SignedBundle",
    "pack_directory",
    "bundled_files",
    "file_digests",
    "sign_digest",
    "verify_bundle",
    "safe_unpack",
    "read_manifest",
    "digest_of",
]

MANIFEST_NAME = "tunefleet-manifest.json"
SIGNATURE_DOMAIN = b"tunefleet-bundle-v1\x00"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 10_000
EXCLUDED_DIRS = {".git", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", "runs"}
RESULTS_MARKER = ".tunefleet-results"
"""A file ``tunefleet run`` puts in the folders it writes (the ``results`` beside the study
file, a local coordinator's ``--state-dir``): a folder holding it, at any depth, is left out of
bundles (a folder of the researcher's code that is merely named ``results`` is not)."""


@dataclass(frozen=True)
class SignedBundle:
    data: bytes
    digest: str
    publisher_key: bytes
    signature: bytes


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign_digest(identity: Identity, digest: str) -> bytes:
    return identity.sign(SIGNATURE_DOMAIN + digest.encode())


def pack_directory(directory: Path, manifest: dict[str, Any], identity: Identity) -> SignedBundle:
    """Pack ``directory`` with ``manifest`` into a signed bundle.

    Version-control, cache and virtual-environment folders are left out, and the results
    folder ``tunefleet run`` writes (:data:`RESULTS_MARKER`); so are symlinks (the
    agent would refuse them). The output is deterministic for the same files and manifest:
    entries are sorted and their times and owners zeroed, so the digest names the content.
    Raises :class:`BundleError` if the result exceeds the bundle size limit.
    """
    if not directory.is_dir():
        raise BundleError(f"bundle directory {directory} does not exist")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest, sort_keys=True).encode())
        for rel, path in bundled_files(directory):
            _add_bytes(tar, rel, path.read_bytes(), mode=path.stat().st_mode & 0o755)
    data = gzip.compress(raw.getvalue(), mtime=0)
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"bundle is {len(data)} bytes, over the limit of {MAX_BUNDLE_BYTES}; "
            "keep data sets out of the bundle directory"
        )
    digest = digest_of(data)
    return SignedBundle(data, digest, identity.public_key, sign_digest(identity, digest))


def bundled_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``(name in the bundle, path)`` of every file :func:`pack_directory` packs from
    ``directory``, in the bundle's order."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS
                         and not (Path(root) / d / RESULTS_MARKER).is_file())
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            if path.is_symlink() or not path.is_file() or rel == MANIFEST_NAME:
                continue
            if name.endswith((".pyc", ".key")):
                continue
            yield rel, path


def file_digests(directory: Path) -> dict[str, str]:
    """The sha256 of each file a bundle of ``directory`` packs, by its name in the bundle."""
    return {rel: hashlib.sha256(path.read_bytes()).hexdigest()
            for rel, path in bundled_files(directory)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode | 0o400
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def verify_bundle(data: bytes, digest: str, publisher_key: bytes, signature: bytes) -> None:
    """Raise :class:`BundleError` unless ``data`` has ``digest`` and the publisher signed it."""
    actual = digest_of(data)
    if actual != digest:
        raise BundleError(f"bundle digest mismatch: expected {digest}, got {actual}")
    try:
        verify(publisher_key, signature, SIGNATURE_DOMAIN + digest.encode())
    except Exception as exc:
        raise BundleError(f"bundle {digest[:12]} has no valid publisher signature: {exc}") from None


def _decompress(data: bytes) -> bytes:
    """Gunzip with a ceiling, so a small bundle cannot inflate into memory without bound.

    The ceiling is the members' size limit plus room for tar headers and padding (an eighth
    of the limit and 1 MiB: over 1.5 KiB for each of the allowed members).
    """
    limit = MAX_UNPACKED_BYTES + MAX_UNPACKED_BYTES // 8 + 1024 * 1024
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(data, limit)
        if inflater.unconsumed_tail:
            raise BundleError(f"bundle inflates to more than {limit} bytes")
        if not inflater.eof:
            raise BundleError("bundle is not gzip data: the stream is truncated")
    except zlib.error as exc:
        raise BundleError(f"bundle is not gzip data: {exc}") from None
    return raw


def _open_tar(data: bytes) -> tarfile.TarFile:
    raw = _decompress(data)
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"bundle is not a tar archive: {exc}") from None


def _checked_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    if len(members) > MAX_MEMBERS:
        raise BundleError(f"bundle has {len(members)} entries, over the limit of {MAX_MEMBERS}")
    total = 0
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    for m in members:
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts or m.name.startswith("/") or "\\" in m.name:
            raise BundleError(f"bundle entry {m.name!r} leaves the bundle directory")
        if m.isfile():
            if path in files or path in dirs or not path.parts or path == PurePosixPath("."):
                raise BundleError(f"bundle entry {m.name!r} appears twice or has no name")
            files.add(path)
        else:
            if path in files:
                raise BundleError(f"bundle entry {m.name!r} is both a file and a directory")
            dirs.add(path)
        for parent in path.parents:
            if parent in files:
                raise BundleError(f"bundle entry {m.name!r} lies under the file {str(parent)!r}")
        if not (m.isfile() or m.isdir()):
            raise BundleError(f"bundle entry {m.name!r} is a link or device file, which is refused")
        total += m.size
        if total > MAX_UNPACKED_BYTES:
            raise BundleError(f"bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    return members


def read_manifest(data: bytes) -> dict[str, Any]:
    """The manifest of a bundle; :class:`BundleError` if it has none or it is not JSON."""
    with _open_tar(data) as tar:
        try:
            member = tar.getmember(MANIFEST_NAME)
        except KeyError:
            raise BundleError(f"bundle has no {MANIFEST_NAME}") from None
        f = tar.extractfile(member)
        if f is None:
            raise BundleError(f"{MANIFEST_NAME} is not a file")
        try:
            manifest = json.loads(f.read())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{MANIFEST_NAME} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST_NAME} must hold a JSON object")
    return manifest


def safe_unpack(data: bytes, target: Path) -> None:
    """Unpack a *verified* bundle into the empty or new directory ``target``.

    Every member is checked before anything is written. Files get owner read/write permission
    plus the executable bit when the archive had it; nothing else of the archive's metadata.
    """
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with _open_tar(data) as tar:
        try:
            members = _checked_members(tar)
        except tarfile.TarError as exc:
            raise BundleError(f"bundle is not a readable tar archive: {exc}") from None
        for m in members:
            dest = (root / m.name).resolve()
            if dest != root and root not in dest.parents:
                raise BundleError(f"bundle entry {m.name!r} leaves the bundle directory")
            if m.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                source = tar.extractfile(m)
                if source is None:
                    raise BundleError(f"bundle entry {m.name!r} cannot be read")
                content = source.read()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BundleError(f"bundle entry {m.name!r} is truncated: {exc}") from None
            with open(dest, "xb") as out:
                out.write(content)
            os.chmod(dest, 0o700 if m.mode & 0o100 else 0o600)
