"""Signed envelopes: a serialized protobuf message, its signer's key, a sequence number, a time.

The signature covers ``domain || 0x00 || seq || time || body`` where ``domain`` is the full name
of the inner message type (a signature made for one kind of message never verifies as another),
``seq`` an 8-byte big-endian integer that increases with every envelope the signer makes, and
``time`` the signing time as a big-endian double. :func:`seal` makes an envelope;
:func:`open_envelope` checks signature, signer and freshness and returns the inner message.
Replay and reordering are refused by the receiver, which keeps the last ``seq`` per signer
(:class:`SequenceGuard`).
"""

from __future__ import annotations

import math
import struct
import threading
import time
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from tunefleet.errors import SignatureError
from tunefleet.keys import Identity, key_id_of, verify
from tunefleet.v1 import common_pb2

__all__ = ["seal", "open_envelope", "next_seq", "SequenceGuard", "DEFAULT_MAX_SKEW"]

M = TypeVar("M", bound=Message)
DEFAULT_MAX_SKEW = 60.0  # seconds of clock drift (and transit) tolerated either way

_seq_lock = threading.Lock()
_last_seq = 0


def next_seq() -> int:
    """A process-wide increasing sequence number that also increases across restarts.

    It is the time in microseconds, or one more than the last one handed out if the clock has
    not moved on (or went back).
    """
    global _last_seq
    with _seq_lock:
        _last_seq = max(_last_seq + 1, time.time_ns() // 1000)
        return _last_seq


def _signed_bytes(message_type: type[Message], seq: int, when: float, body: bytes) -> bytes:
    return (message_type.DESCRIPTOR.full_name.encode() + b"\x00"
            + struct.pack(">qd", seq, when) + body)


def seal(
    identity: Identity, message: Message, seq: int | None = None, when: float | None = None
) -> common_pb2.SignedEnvelope:
    """Serialize ``message`` and sign it with ``identity``, stamping sequence number and time."""
    body = message.SerializeToString()
    seq = next_seq() if seq is None else seq
    when = time.time() if when is None else when
    return common_pb2.SignedEnvelope(
        body=body, public_key=identity.public_key, seq=seq, time=when,
        signature=identity.sign(_signed_bytes(type(message), seq, when, body)),
    )


def open_envelope(
    envelope: common_pb2.SignedEnvelope,
    message_type: type[M],
    expected_key_id: str | None = None,
    max_skew: float | None = DEFAULT_MAX_SKEW,
    now: float | None = None,
) -> tuple[M, str]:
    """Verify ``envelope`` and parse its body as ``message_type``.

    Returns ``(message, signer_key_id)``. Raises :class:`SignatureError` if the signature does
    not verify, if ``expected_key_id`` is given and the signer is someone else, if the envelope
    was signed more than ``max_skew`` seconds away from ``now`` (``None`` skips the check), or if
    the body does not parse.
    """
    signer = key_id_of(envelope.public_key)
    if expected_key_id is not None and signer != expected_key_id:
        raise SignatureError(f"signed by key {signer}, expected key {expected_key_id}")
    verify(envelope.public_key, envelope.signature,
           _signed_bytes(message_type, envelope.seq, envelope.time, envelope.body))
    if max_skew is not None:
        skew = (time.time() if now is None else now) - envelope.time
        if not math.isfinite(envelope.time):
            raise SignatureError(f"envelope time {envelope.time} is not a finite number")
        if not abs(skew) <= max_skew:
            which = "stale" if skew > 0 else "from the future"
            raise SignatureError(
                f"envelope is {which} by {abs(skew):.0f}s (at most {max_skew:.0f}s allowed); "
                "check the signer's clock"
            )
    message = message_type()
    try:
        message.ParseFromString(envelope.body)
    except DecodeError as exc:
        raise SignatureError(f"signed body is not a {message_type.__name__}: {exc}") from None
    return message, signer


class SequenceGuard:
    """Refuses replayed and reordered envelopes: each signer's ``seq`` must increase.

    ``load`` and ``save`` connect it to persistent storage (so a restart does not reopen the
    window); by default it keeps the last sequence numbers in memory only. Not thread-safe: the
    coordinator uses it from its single hub thread.
    """

    def __init__(self, load: object = None, save: object = None) -> None:
        self.accepted = 0  # envelopes accepted so far
        self._last: dict[str, int] = {}
        self._load = load
        self._save = save

    def forget(self) -> None:
        """Drop the sequence numbers held in memory: each signer's is loaded again on its next
        check (after the storage rolled back what the memory had seen)."""
        if callable(self._load):
            self._last.clear()

    def check(self, key_id: str, seq: int) -> None:
        """Raise :class:`SignatureError` unless ``seq`` is above the signer's last one; record it."""
        last = self._last.get(key_id)
        if last is None and callable(self._load):
            last = self._load(key_id)
        if last is not None and seq <= last:
            raise SignatureError(
                f"envelope seq {seq} of key {key_id} is not above the last one ({last}): "
                "replayed or reordered"
            )
        self._last[key_id] = seq
        self.accepted += 1
        if callable(self._save):
            self._save(key_id, seq)
