"""The node-facing gRPC service: registration, sessions and bundle downloads.

Every message a node sends in its session is a signed envelope; the coordinator verifies it
against the key the node registered with and refuses sequence numbers that do not increase, so
no unsigned, forged or replayed message changes state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from coordinator.grpc_errors import abort_with, guarded
from tunefleet.envelope import open_envelope
from tunefleet.errors import InvalidInputError, NotFoundError, SignatureError
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from coordinator.server import CoordinatorServer

__all__ = ["NodeServicer"]

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.hub = server.hub_thread

    async def Register(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> node_pb2.RegisterReply:
        async def work() -> node_pb2.RegisterReply:
            message, node_id = open_envelope(request, node_pb2.RegisterRequest)
            await self.hub.call(
                self.server.hub.register_node, node_id, request.public_key, message.name,
                message.inventory,
            )
            return node_pb2.RegisterReply(
                node_id=node_id, lease_seconds=self.server.hub.lease_seconds
            )

        return await guarded(context, work())

    async def DownloadBundle(
        self, request: node_pb2.BundleRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.BundleChunk]:
        data, key, signature = await guarded(
            context, self.hub.call(self.server.hub.get_bundle, request.digest)
        )
        header = common_pb2.BundleHeader(
            digest=request.digest, size=len(data), publisher_key=key, signature=signature
        )
        yield common_pb2.BundleChunk(header=header, data=data[:CHUNK])
        for offset in range(CHUNK, len(data), CHUNK):
            yield common_pb2.BundleChunk(data=data[offset: offset + CHUNK])

    async def Session(
        self, request_iterator: AsyncIterator[common_pb2.SignedEnvelope],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[node_pb2.CoordinatorMessage]:
        hub = self.server.hub
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        try:
            event, node_id = open_envelope(first, node_pb2.NodeEvent)
            node = await self.hub.call(hub.store.get_node, node_id)
            if node.public_key != first.public_key or event.node_id != node_id:
                raise SignatureError("session opened with a key that is not the node's")
            if event.WhichOneof("kind") != "hello":
                raise InvalidInputError("kind", event.WhichOneof("kind"), "the first must be hello")
        except (SignatureError, InvalidInputError, NotFoundError) as exc:
            await abort_with(context, exc)
        queue = self.server.open_session(node_id)
        last_seq = event.seq
        await self.server.deliver(await self.hub.call(hub.node_connected, node_id, event.hello))
        log.info("node %s connected", node_id[:8])

        async def read() -> None:
            nonlocal last_seq
            try:
                async for envelope in request_iterator:
                    message, _ = open_envelope(envelope, node_pb2.NodeEvent, node_id)
                    if message.seq <= last_seq:
                        raise SignatureError(
                            f"event seq {message.seq} does not increase (last {last_seq}): replay"
                        )
                    last_seq = message.seq
                    await self.server.deliver(await self._handle(node_id, message, envelope))
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            self.server.close_session(node_id, queue)
            await self.hub.call(hub.node_disconnected, node_id)
            log.info("node %s disconnected", node_id[:8])
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            await abort_with(context, reader.exception() or RuntimeError())

    async def _handle(
        self, node_id: str, event: node_pb2.NodeEvent, envelope: common_pb2.SignedEnvelope
    ) -> list[tuple[str, node_pb2.CoordinatorMessage]]:
        hub = self.server.hub
        kind = event.WhichOneof("kind")
        if kind == "report":
            return await self.hub.call(
                hub.report, node_id, event.report, envelope.SerializeToString()
            )
        if kind == "finished":
            return await self.hub.call(hub.finished, node_id, event.finished)
        if kind == "heartbeat":
            return await self.hub.call(hub.heartbeat, node_id, event.heartbeat)
        if kind == "declined":
            failed = node_pb2.AttemptFinished(
                attempt_id=event.declined.attempt_id, outcome="failed", exit_code=-1,
                error=f"declined by node: {event.declined.reason}",
            )
            return await self.hub.call(hub.finished, node_id, failed)
        raise InvalidInputError("kind", kind, "must be heartbeat, report, finished or declined")
