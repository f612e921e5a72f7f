"""The bundle cache verifies before it keeps or unpacks anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node_agent.bundle_cache import BundleCache, TrustPolicy
from tunefleet.bundle import pack_directory
from tunefleet.errors import BundleError
from tunefleet.keys import Identity


def make_bundle(tmp_path: Path, identity: Identity):  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text("print('hi')\n")
    return pack_directory(src, {"entrypoint": "train.py"}, identity)


def test_verified_bundle_is_cached_and_fetched_once(tmp_path: Path) -> None:
    researcher = Identity.generate()
    bundle = make_bundle(tmp_path, researcher)
    calls = []

    async def fetch(digest: str) -> tuple[bytes, bytes, bytes]:
        calls.append(digest)
        return bundle.data, bundle.publisher_key, bundle.signature

    cache = BundleCache(tmp_path / "cache", fetch)
    asyncio.run(cache.unpack(bundle.digest, tmp_path / "w1"))
    asyncio.run(cache.unpack(bundle.digest, tmp_path / "w2"))
    assert calls == [bundle.digest]
    assert (tmp_path / "w2" / "train.py").read_text() == "print('hi')\n"


@pytest.mark.parametrize("forgery", ["bytes", "key", "untrusted"])
def test_forged_or_untrusted_bundle_is_never_cached_or_unpacked(tmp_path: Path,
                                                                forgery: str) -> None:
    researcher, other = Identity.generate(), Identity.generate()
    bundle = make_bundle(tmp_path, researcher)
    data, key = bundle.data, bundle.publisher_key
    if forgery == "bytes":
        data = data[:-1] + bytes([data[-1] ^ 1])
    elif forgery == "key":
        key = other.public_key

    async def fetch(digest: str) -> tuple[bytes, bytes, bytes]:
        return data, key, bundle.signature

    trusted = {other.key_id} if forgery == "untrusted" else set()
    cache = BundleCache(tmp_path / "cache", fetch, TrustPolicy(trusted))
    with pytest.raises(BundleError):
        asyncio.run(cache.unpack(bundle.digest, tmp_path / "w"))
    assert list((tmp_path / "cache").iterdir()) == [] or forgery == "untrusted"
    assert not (tmp_path / "w" / "train.py").exists()


def test_the_cache_is_the_agents_alone(tmp_path: Path) -> None:
    # before, 0755 and 0644: a trial, running as another account, listed and read every
    # researcher's cached bundles
    import stat

    bundle = make_bundle(tmp_path, Identity.generate())

    async def fetch(digest: str) -> tuple[bytes, bytes, bytes]:
        return bundle.data, bundle.publisher_key, bundle.signature

    (tmp_path / "cache").mkdir(mode=0o755)  # an older agent's
    cache = BundleCache(tmp_path / "cache", fetch)
    asyncio.run(cache.get(bundle.digest))
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
