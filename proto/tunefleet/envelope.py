"""Signed envelopes: a serialized protobuf message, its signer's public key and a signature.

The signature covers ``domain || 0x00 || body`` where ``domain`` is the full name of the inner
message type, so a signature made for one kind of message never verifies as another kind.
:func:`seal` makes an envelope, :func:`open_envelope` checks it and returns the inner message.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from tunefleet.errors import SignatureError
from tunefleet.keys import Identity, key_id_of, verify
from tunefleet.v1 import common_pb2

__all__ = ["seal", "open_envelope"]

M = TypeVar("M", bound=Message)


def _signed_bytes(message_type: type[Message], body: bytes) -> bytes:
    return message_type.DESCRIPTOR.full_name.encode() + b"\x00" + body


def seal(identity: Identity, message: Message) -> common_pb2.SignedEnvelope:
    """Serialize ``message`` and sign it with ``identity``."""
    body = message.SerializeToString()
    return common_pb2.SignedEnvelope(
        body=body,
        public_key=identity.public_key,
        signature=identity.sign(_signed_bytes(type(message), body)),
    )


def open_envelope(
    envelope: common_pb2.SignedEnvelope,
    message_type: type[M],
    expected_key_id: str | None = None,
) -> tuple[M, str]:
    """Verify ``envelope`` and parse its body as ``message_type``.

    Returns ``(message, signer_key_id)``. Raises :class:`SignatureError` if the signature does
    not verify, if ``expected_key_id`` is given and the signer is someone else, or if the body
    does not parse.
    """
    signer = key_id_of(envelope.public_key)
    if expected_key_id is not None and signer != expected_key_id:
        raise SignatureError(f"signed by key {signer}, expected key {expected_key_id}")
    verify(envelope.public_key, envelope.signature, _signed_bytes(message_type, envelope.body))
    message = message_type()
    try:
        message.ParseFromString(envelope.body)
    except DecodeError as exc:
        raise SignatureError(f"signed body is not a {message_type.__name__}: {exc}") from None
    return message, signer
