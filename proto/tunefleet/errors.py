"""Error types shared by every part of tunefleet.

There is one root class, :class:`TunefleetError`; every error that tunefleet raises on purpose
derives from it, so callers can catch them all at once. Messages name the field, the value and
what is allowed, so that a user can act on them without reading the code.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TunefleetError",
    "InvalidInputError",
    "SignatureError",
    "BundleError",
    "NotFoundError",
    "StateError",
]


class TunefleetError(Exception):
    """The root of all errors that tunefleet raises deliberately."""


class InvalidInputError(TunefleetError, ValueError):
    """Input that breaks a documented constraint.

    ``field`` is a dotted path to the offending value (``space.lr.low``), ``value`` the value
    that was given and ``allowed`` a short description of what would have been accepted. The
    message shows at most :data:`MAX_SHOWN` characters of the value's ``repr`` (its start,
    its end and its length), so a huge value cannot flood a terminal or an RPC status.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: got {shown(value)}; {allowed}")


MAX_SHOWN = 120


def shown(value: Any) -> str:
    """``repr(value)``, :func:`shortened` to :data:`MAX_SHOWN` characters."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4,300-digit limit for conversion to text
        return f"<{type(value).__name__} of about {int(value.bit_length() * 0.30103):,} digits>"
    return shortened(text, MAX_SHOWN)


def shortened(text: str, limit: int) -> str:
    """``text`` if at most ``limit`` characters, else its first and last characters and its
    length, in about ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = (limit - 30) // 2
    return f"{text[:half]}...{text[-half:]} ({len(text):,} characters)"


class SignatureError(TunefleetError):
    """A signature is missing, malformed, made by the wrong key or does not match the bytes."""


class BundleError(TunefleetError):
    """A training bundle is malformed, unsafe to unpack, or does not match its digest."""


class NotFoundError(TunefleetError, LookupError):
    """A study, trial, attempt, node or bundle that does not exist."""


class StateError(TunefleetError):
    """An operation that the current state of an object does not allow."""
