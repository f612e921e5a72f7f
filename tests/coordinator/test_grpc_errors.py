"""The text and code a gRPC status carries for each kind of error."""

from __future__ import annotations

import grpc

from coordinator.grpc_errors import MAX_DETAILS, details_of, status_of
from tunefleet.errors import InvalidInputError, StateError


def test_an_errors_text_is_sent_whole_when_short_and_cut_when_long() -> None:
    short = StateError("trial 3 is completed, not running")
    assert details_of(short) == "trial 3 is completed, not running"
    long = StateError("x" * 50_000)  # gRPC sends details as a header, which has a size limit
    text = details_of(long)
    assert len(text) <= MAX_DETAILS and text.endswith("x..." + "x" * 985 + " (50,000 characters)")
    assert text.startswith("x" * 100)


def test_codes_follow_the_kind_of_error() -> None:
    assert status_of(InvalidInputError("f", 1, "ok")) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(StateError("no")) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(RuntimeError("bug")) is grpc.StatusCode.INTERNAL
