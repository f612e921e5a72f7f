"""The node-facing gRPC service: registration, sessions and bundle downloads.

Every message a node sends is a signed envelope; the coordinator verifies it against the key
the node registered with, refuses stale ones and sequence numbers that do not increase (the
hub's replay guard), so no unsigned, forged, replayed or reordered message changes state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from coordinator.grpc_errors import abort_with, guarded
from coordinator.hub import check_inventory
from tunefleet.envelope import open_envelope
from tunefleet.errors import InvalidInputError, SignatureError
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from coordinator.server import CoordinatorServer

__all__ = ["NodeServicer", "Received", "SessionEnd", "Stream"]

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


@dataclass
class Stream:
    """One session's stream of events: the session's queue, and ``refused`` once one of them
    did not verify, after which none of its later events is handled."""

    queue: asyncio.Queue[node_pb2.CoordinatorMessage | None] | None = None
    refused: bool = False


@dataclass(frozen=True)
class Received:
    """A node's event as it arrived: verified off the event loop, in the batch it joins."""

    node_id: str
    envelope: common_pb2.SignedEnvelope
    stream: Stream


@dataclass(frozen=True)
class SessionEnd:
    """Queued after a node's last event: its session ends once those events are answered."""

    node_id: str
    queue: asyncio.Queue[node_pb2.CoordinatorMessage | None]


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.hub = server.hub_thread

    def _open(self, envelope: common_pb2.SignedEnvelope, kind: type, expected: str | None = None
              ):  # type: ignore[no-untyped-def]
        return open_envelope(envelope, kind, expected, max_skew=self.server.max_skew)

    async def Register(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> node_pb2.RegisterReply:
        async def work() -> node_pb2.RegisterReply:
            message, node_id = self._open(request, node_pb2.RegisterRequest)
            hub = self.server.hub
            await self.hub.call(hub.check_node, node_id)
            await self.hub.call(hub.accept, node_id, request.seq)
            await self.hub.call(hub.register_node, node_id, request.public_key, message.name,
                                message.inventory)
            return node_pb2.RegisterReply(node_id=node_id, lease_seconds=hub.lease_seconds)

        return await guarded(context, work())

    async def DownloadBundle(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.BundleChunk]:
        async def work() -> tuple[bytes, bytes, bytes, str]:
            message, signer = self._open(request, node_pb2.BundleRequest)
            data, key, signature = await self.hub.call(self.server.hub.get_bundle,
                                                       message.digest, signer)
            return data, key, signature, message.digest

        data, key, signature, digest = await guarded(context, work())
        header = common_pb2.BundleHeader(
            digest=digest, size=len(data), publisher_key=key, signature=signature
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
        except Exception as exc:  # an undecodable first message
            await abort_with(context, exc)
        try:
            event, node_id = self._open(first, node_pb2.NodeEvent)
            node = await self.hub.call(hub.store.get_node, node_id)
            if node.public_key != first.public_key or event.node_id != node_id:
                raise SignatureError("session opened with a key that is not the node's")
            if event.WhichOneof("kind") != "hello":
                raise InvalidInputError("kind", event.WhichOneof("kind"), "the first must be hello")
            check_inventory(event.hello.inventory)  # refused here, not once the session is open
            await self.hub.call(hub.check_node, node_id)
            await self.hub.call(hub.accept, node_id, first.seq)
        except Exception as exc:
            await abort_with(context, exc)
        queue = self.server.open_session(node_id)
        self.server.failed.pop(node_id, None)
        await self.server.deliver(await self.hub.call(hub.node_connected, node_id, event.hello))
        log.info("node %s connected", node_id[:8])

        stream = Stream(queue)

        async def read() -> None:
            try:
                async for envelope in request_iterator:
                    # Verified and committed in a batch; the answer (or the end of the session,
                    # for an envelope that does not verify) follows once the batch commits.
                    await self.server.inbox.put(Received(node_id, envelope, stream))
            except BaseException:
                queue.put_nowait(None)
                raise
            # The node closed its side: end the session after the answers to its last events.
            await self.server.inbox.put(SessionEnd(node_id, queue))

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            if self.server.close_session(node_id, queue):  # not replaced by a reconnect
                await self.hub.call(hub.node_disconnected, node_id)
                log.info("node %s disconnected", node_id[:8])
        failure = self.server.failed.pop(node_id, None)
        if failure is not None:
            await abort_with(context, failure)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            await abort_with(context, reader.exception() or RuntimeError())
        elif self.server.ended.pop(node_id, None):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node banned by the operator")
