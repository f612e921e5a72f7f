"""Signed envelopes: round trip, tampering, wrong signers and domain separation."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunefleet.envelope import SequenceGuard, next_seq, open_envelope, seal
from tunefleet.errors import SignatureError
from tunefleet.keys import Identity
from tunefleet.v1 import common_pb2, node_pb2, researcher_pb2


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def mallory() -> Identity:
    return Identity.generate()


def stop(study_id: str = "study-1") -> researcher_pb2.StopStudyRequest:
    return researcher_pb2.StopStudyRequest(study_id=study_id)


def wire(envelope: common_pb2.SignedEnvelope) -> common_pb2.SignedEnvelope:
    return common_pb2.SignedEnvelope.FromString(envelope.SerializeToString())


@settings(max_examples=40, deadline=None)
@given(study_id=st.text(max_size=40), time=st.floats(allow_nan=False))
def test_seal_then_open_round_trips(alice: Identity, study_id: str, time: float) -> None:
    message = stop(study_id)
    envelope = wire(seal(alice, message))
    assert envelope.public_key == alice.public_key
    opened, signer = open_envelope(envelope, researcher_pb2.StopStudyRequest)
    assert opened == message and type(opened) is researcher_pb2.StopStudyRequest
    assert signer == alice.key_id


def test_open_with_the_expected_signer(alice: Identity) -> None:
    message = stop()
    opened, signer = open_envelope(
        seal(alice, message), researcher_pb2.StopStudyRequest, expected_key_id=alice.key_id
    )
    assert opened == message and signer == alice.key_id


def test_a_richer_message_round_trips(alice: Identity) -> None:
    report = node_pb2.MetricReport(attempt_id=7, seq=3, step=2)
    report.metrics["val_loss"] = 0.25
    opened, _ = open_envelope(wire(seal(alice, report)), node_pb2.MetricReport)
    assert opened == report


@settings(max_examples=30, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_a_tampered_body_is_refused(alice: Identity, position: int, bit: int) -> None:
    envelope = seal(alice, stop())
    body = bytearray(envelope.body)
    body[position % len(body)] ^= 1 << bit
    envelope.body = bytes(body)
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_an_appended_body_is_refused(alice: Identity) -> None:
    envelope = seal(alice, stop())
    # Appending a field would still parse, and could change the meaning.
    envelope.body += stop(study_id="study-2").SerializeToString()
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_a_forged_signer_is_refused(alice: Identity, mallory: Identity) -> None:
    # Mallory signs, then claims the message comes from Alice.
    envelope = seal(mallory, stop())
    envelope.public_key = alice.public_key
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest, expected_key_id=alice.key_id)


def test_a_swapped_public_key_is_refused(alice: Identity, mallory: Identity) -> None:
    # Alice's signature, presented with Mallory's key so that Mallory would be the signer.
    envelope = seal(alice, stop())
    envelope.public_key = mallory.public_key
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_a_signature_from_another_message_is_refused(alice: Identity) -> None:
    envelope = seal(alice, stop("a"))
    envelope.signature = seal(alice, stop("b")).signature
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_an_unexpected_signer_is_refused(alice: Identity, mallory: Identity) -> None:
    envelope = seal(mallory, stop())
    with pytest.raises(SignatureError) as exc:
        open_envelope(envelope, researcher_pb2.StopStudyRequest, expected_key_id=alice.key_id)
    assert mallory.key_id in str(exc.value) and alice.key_id in str(exc.value)
    # The same envelope is fine without the expectation: the signature itself is valid.
    assert open_envelope(envelope, researcher_pb2.StopStudyRequest)[1] == mallory.key_id


@pytest.mark.parametrize("field", ["public_key", "signature"])
def test_a_missing_key_or_signature_is_refused(alice: Identity, field: str) -> None:
    envelope = seal(alice, stop())
    envelope.ClearField(field)
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_an_empty_envelope_is_refused() -> None:
    with pytest.raises(SignatureError):
        open_envelope(common_pb2.SignedEnvelope(), researcher_pb2.StopStudyRequest)


def test_domain_separation_between_message_types(alice: Identity) -> None:
    # A StopStudyRequest's study_id is field 1, a string: the same bytes parse as a StudySpec
    # whose name is that string. The signature must still not carry over.
    message = researcher_pb2.StopStudyRequest(study_id="digits-mlp")
    envelope = seal(alice, message)
    as_spec = common_pb2.StudySpec.FromString(envelope.body)
    assert as_spec.name == message.study_id  # the bytes do parse as the other type
    with pytest.raises(SignatureError):
        open_envelope(envelope, common_pb2.StudySpec)
    assert open_envelope(envelope, researcher_pb2.StopStudyRequest)[0] == message


def test_domain_separation_with_an_empty_body(alice: Identity) -> None:
    # Two default messages serialize to the same empty body; only the domain tells them apart.
    envelope = seal(alice, researcher_pb2.ListStudiesRequest())
    assert envelope.body == b""
    with pytest.raises(SignatureError):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)
    opened, _ = open_envelope(envelope, researcher_pb2.ListStudiesRequest)
    assert opened == researcher_pb2.ListStudiesRequest()


def test_the_signature_covers_the_documented_bytes(alice: Identity) -> None:
    body = stop().SerializeToString()
    domain = researcher_pb2.StopStudyRequest.DESCRIPTOR.full_name.encode()
    seq, when = 42, time.time()
    header = struct.pack(">qd", seq, when)
    envelope = common_pb2.SignedEnvelope(
        body=body, public_key=alice.public_key, seq=seq, time=when,
        signature=alice.sign(domain + b"\x00" + header + body),
    )
    assert open_envelope(envelope, researcher_pb2.StopStudyRequest)[0] == stop()
    # Without the separator, without seq and time, or over the body alone, it is not valid.
    for signed in (domain + header + body, domain + b"\x00" + body, body):
        envelope.signature = alice.sign(signed)
        with pytest.raises(SignatureError):
            open_envelope(envelope, researcher_pb2.StopStudyRequest)


def test_a_signed_body_that_does_not_parse_is_refused(alice: Identity) -> None:
    body = b"\xff\xff\xff"  # not a valid protobuf encoding
    domain = researcher_pb2.StopStudyRequest.DESCRIPTOR.full_name.encode()
    when = time.time()
    envelope = common_pb2.SignedEnvelope(
        body=body, public_key=alice.public_key, seq=1, time=when,
        signature=alice.sign(domain + b"\x00" + struct.pack(">qd", 1, when) + body),
    )
    with pytest.raises(SignatureError) as exc:
        open_envelope(envelope, researcher_pb2.StopStudyRequest)
    assert "StopStudyRequest" in str(exc.value)


def test_seq_and_time_are_signed(alice: Identity) -> None:
    envelope = seal(alice, stop())
    for field, value in (("seq", envelope.seq + 1), ("time", envelope.time + 1)):
        forged = wire(envelope)
        setattr(forged, field, value)
        with pytest.raises(SignatureError):
            open_envelope(forged, researcher_pb2.StopStudyRequest)


@pytest.mark.parametrize("offset, word", [(-3600.0, "stale"), (3600.0, "from the future")])
def test_stale_and_future_envelopes_are_refused(alice: Identity, offset: float, word: str) -> None:
    envelope = seal(alice, stop(), when=time.time() + offset)
    with pytest.raises(SignatureError, match=word):
        open_envelope(envelope, researcher_pb2.StopStudyRequest)
    # A few seconds of drift are tolerated.
    drifted = seal(alice, stop(), when=time.time() + 5)
    assert open_envelope(drifted, researcher_pb2.StopStudyRequest)[0] == stop()


def test_sequence_numbers_increase_across_calls() -> None:
    seqs = [next_seq() for _ in range(1000)]
    assert seqs == sorted(set(seqs))


def test_sequence_guard_refuses_replays_and_reorderings() -> None:
    saved: dict[str, int] = {}
    guard = SequenceGuard(load=saved.get, save=saved.__setitem__)
    guard.check("k", 5)
    guard.check("k", 9)
    for seq in (9, 7):
        with pytest.raises(SignatureError, match="replayed or reordered"):
            guard.check("k", seq)
    guard.check("other", 1)
    # A new guard over the same storage (a restarted coordinator) remembers.
    again = SequenceGuard(load=saved.get, save=saved.__setitem__)
    with pytest.raises(SignatureError):
        again.check("k", 9)
    again.check("k", 10)
