"""The agent's bundle cache: fetch by digest, verify, keep, unpack into fresh work dirs.

A bundle is written to the cache only after its digest and its publisher's signature have been
checked and the publisher passed the trust policy; an unverified byte is never unpacked.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from tunefleet.bundle import digest_of, safe_unpack, verify_bundle
from tunefleet.errors import BundleError
from tunefleet.keys import key_id_of

__all__ = ["BundleCache", "Fetcher", "TrustPolicy"]

log = logging.getLogger(__name__)

# A fetcher returns (data, publisher_key, signature) for a digest.
Fetcher = Callable[[str], Awaitable[tuple[bytes, bytes, bytes]]]


class TrustPolicy:
    """Which publishers' bundles this agent runs: listed key ids, or (empty) anyone admitted."""

    def __init__(self, trusted_key_ids: set[str] | None = None) -> None:
        self.trusted = set(trusted_key_ids or ())

    def check(self, publisher_key: bytes) -> None:
        key_id = key_id_of(publisher_key)
        if self.trusted and key_id not in self.trusted:
            raise BundleError(f"publisher {key_id} is not in this node's trust policy")


class BundleCache:
    def __init__(self, root: Path, fetch: Fetcher, policy: TrustPolicy | None = None) -> None:
        self.root = root
        # the agent's alone: a trial (another account) must not list or read other
        # researchers' bundles
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        self.fetch = fetch
        self.policy = policy or TrustPolicy()

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BundleError(f"bundle digest {digest!r} is not a sha256 hex digest")
        return self.root / f"{digest}.bundle"

    async def get(self, digest: str) -> bytes:
        """The verified bytes of a bundle, from the cache or fetched and checked now."""
        path = self._path(digest)
        key_path = path.with_suffix(".pub")
        if path.exists() and key_path.exists():
            self.policy.check(key_path.read_bytes())
            data = path.read_bytes()
            if digest_of(data) == digest:  # never trust the cache's bytes blindly
                return data
            log.warning("cached bundle %s is corrupt; fetching it again", digest[:12])
        data, key, signature = await self.fetch(digest)
        verify_bundle(data, digest, key, signature)
        self.policy.check(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        _write_private(tmp, data)
        _write_private(key_path, key)
        os.replace(tmp, path)
        return data

    async def unpack(self, digest: str, workdir: Path) -> None:
        """Unpack the bundle into ``workdir``, which must not exist yet."""
        if workdir.exists():
            shutil.rmtree(workdir)
        safe_unpack(await self.get(digest), workdir)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by the agent's user only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an older cache's file keeps its mode through O_CREAT
