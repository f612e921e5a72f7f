"""Mapping of tunefleet's error types to gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError

from coordinator.hub import PermissionDeniedError
from tunefleet.errors import (
    BundleError,
    InvalidInputError,
    NotFoundError,
    SignatureError,
    StateError,
    shortened,
)

__all__ = ["status_of", "details_of", "abort_with", "guarded"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def status_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, (InvalidInputError, BundleError, DecodeError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, SignatureError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, PermissionDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, StateError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


MAX_DETAILS = 2000  # characters of an error's text sent in a status (gRPC sends it as a header)


def details_of(exc: BaseException) -> str:
    """The text a status carries for ``exc``: its message, shortened to :data:`MAX_DETAILS`
    characters (with the full length named) so no error can outgrow gRPC's header limit."""
    return shortened(str(exc), MAX_DETAILS)


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    code = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("internal error", exc_info=exc)
        await context.abort(code, f"internal error: {type(exc).__name__}")
    await context.abort(code, details_of(exc))
    raise AssertionError("unreachable")  # noqa: S101  context.abort always raises


async def guarded(context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
    """Await ``work``; turn tunefleet errors into the matching gRPC status."""
    try:
        return await work
    except (grpc.aio.AbortError, grpc.RpcError):
        raise
    except Exception as exc:
        await abort_with(context, exc)


GuardedCall = Callable[..., Awaitable[T]]
