"""A server interceptor that answers undecodable requests with INVALID_ARGUMENT.

grpc.aio decodes a request before the servicer runs; bytes that do not parse would otherwise
end as UNKNOWN or INTERNAL with a traceback in the log. The guard decodes with a deserializer
that cannot fail: a request that does not parse becomes a :class:`Malformed` marker, which the
wrapped handler refuses with INVALID_ARGUMENT (for streams: when the bad message is read, as an
:class:`~tunefleet.errors.InvalidInputError` that the servicers map to INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from tunefleet.errors import InvalidInputError

__all__ = ["DecodeGuard", "Malformed"]

REFUSAL = "the request is not a valid protobuf message of this method's type"


class Malformed:
    """Stands for request bytes that did not parse."""


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return Malformed()

    return decode


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in requests:
        if isinstance(item, Malformed):
            raise InvalidInputError("request", "undecodable bytes", REFUSAL)
        yield item


class DecodeGuard(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler: Any = await continuation(handler_call_details)  # stubs type it as sync
        if handler is None or handler.request_deserializer is None:
            return handler
        decode = _safe(handler.request_deserializer)
        encode = handler.response_serializer
        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def uu(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, REFUSAL)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(uu, decode, encode)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            async def us(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, REFUSAL)
                async for item in unary_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(us, decode, encode)
        if handler.stream_unary is not None:
            stream_unary = handler.stream_unary

            async def su(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await stream_unary(_checked(requests), context)

            return grpc.stream_unary_rpc_method_handler(su, decode, encode)
        stream_stream = handler.stream_stream

        async def ss(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[Any]:
            async for item in stream_stream(_checked(requests), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(ss, decode, encode)
