"""Signed reads: who is asking for a study's state, its trials or the list of studies.

The read RPCs keep their plain request messages; the client sends, in the call's metadata
under :data:`READ_AUTH_METADATA`, a :class:`~tunefleet.envelope` signature of that very request
(the same message, sealed with the researcher's key, its time and sequence number). The server
checks the signature, the time (the same clock-skew limit as every envelope) and that the
signed message equals the request, and then lets the signer read only what it may: its own
studies, or everything for the operator. A read changes nothing, so no sequence number is
recorded; the signature binds the token to the request and TLS keeps it from being seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from tunefleet.envelope import DEFAULT_MAX_SKEW, open_envelope, seal
from tunefleet.errors import SignatureError
from tunefleet.keys import Identity
from tunefleet.v1 import common_pb2

__all__ = ["READ_AUTH_METADATA", "MAX_TOKEN_BYTES", "read_metadata", "read_signer"]

READ_AUTH_METADATA = "tunefleet-read-auth-bin"  # gRPC sends "-bin" keys as raw bytes
MAX_TOKEN_BYTES = 4096

M = TypeVar("M", bound=Message)


def read_metadata(identity: Identity, request: Message) -> tuple[tuple[str, bytes], ...]:
    """The call metadata that signs ``request`` as ``identity``'s read."""
    return ((READ_AUTH_METADATA, seal(identity, request).SerializeToString()),)


def read_signer(
    metadata: Iterable[tuple[str, str | bytes]] | None,
    request: M,
    max_skew: float | None = DEFAULT_MAX_SKEW,
) -> str:
    """The key id that signed ``request``, from the call's ``metadata``.

    Raises :class:`~tunefleet.errors.SignatureError` when the token is missing, too large, not
    an envelope, not validly signed, outside the clock-skew limit, or signs another request.
    """
    token = None
    for key, value in metadata or ():
        if key == READ_AUTH_METADATA:
            token = value
            break
    if token is None:
        raise SignatureError(
            "reading a study must be signed with the researcher key that submitted it (or the "
            "operator's); the SDK and CLI sign reads when they have a key (`tunefleet keygen`)"
        )
    if isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise SignatureError(f"the read signature must be at most {MAX_TOKEN_BYTES} raw bytes")
    try:
        envelope = common_pb2.SignedEnvelope.FromString(token)
    except DecodeError as exc:
        raise SignatureError(f"the read signature is not a signed envelope: {exc}") from None
    message, signer = open_envelope(envelope, type(request), max_skew=max_skew)
    if message != request:
        raise SignatureError("the read signature signs another request than the one sent")
    return signer
