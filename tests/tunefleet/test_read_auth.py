"""Signed reads: the metadata token that names who reads a study (unit level)."""

from __future__ import annotations

import time

import pytest

from tunefleet.envelope import seal
from tunefleet.errors import SignatureError
from tunefleet.keys import Identity
from tunefleet.read_auth import MAX_TOKEN_BYTES, READ_AUTH_METADATA, read_metadata, read_signer
from tunefleet.v1 import researcher_pb2


def test_a_signed_read_names_its_signer() -> None:
    me = Identity.generate()
    request = researcher_pb2.ListTrialsRequest(study_id="s1", include_reports=True)
    metadata = (("user-agent", "x"), *read_metadata(me, request))
    assert read_signer(metadata, request) == me.key_id
    assert read_signer(read_metadata(me, researcher_pb2.ListStudiesRequest()),
                       researcher_pb2.ListStudiesRequest()) == me.key_id


def _token(envelope_bytes: bytes) -> tuple[tuple[str, bytes], ...]:
    return ((READ_AUTH_METADATA, envelope_bytes),)


@pytest.mark.parametrize("case", ["missing", "text", "too-large", "garbage", "other-study",
                                  "other-type", "stale", "future", "bad-signature"])
def test_bad_read_tokens_are_refused_with_a_reason(case: str) -> None:
    me = Identity.generate()
    request = researcher_pb2.StudyRef(study_id="s1")
    metadata: tuple[tuple[str, str | bytes], ...]
    if case == "missing":
        metadata = ()
    elif case == "text":
        metadata = ((READ_AUTH_METADATA, "not bytes"),)
    elif case == "too-large":
        metadata = _token(b"\x00" * (MAX_TOKEN_BYTES + 1))
    elif case == "garbage":
        metadata = _token(b"\xff\xff\xff")
    elif case == "other-study":
        metadata = read_metadata(me, researcher_pb2.StudyRef(study_id="s2"))
    elif case == "other-type":
        metadata = read_metadata(me, researcher_pb2.ListTrialsRequest(study_id="s1"))
    elif case in ("stale", "future"):
        shift = -3600 if case == "stale" else 3600
        metadata = _token(seal(me, request, when=time.time() + shift).SerializeToString())
    else:
        envelope = seal(me, request)
        envelope.signature = bytes(64)
        metadata = _token(envelope.SerializeToString())
    with pytest.raises(SignatureError) as info:
        read_signer(metadata, request)
    assert str(info.value)
    if case in ("stale", "future"):
        assert ("stale" if case == "stale" else "from the future") in str(info.value)
    if case == "other-study":
        assert "another request" in str(info.value)
