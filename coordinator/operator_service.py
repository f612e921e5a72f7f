"""The operator's gRPC service: admit, ban and unban keys; list who is admitted or banned."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from coordinator.grpc_errors import guarded
from tunefleet.envelope import open_envelope
from tunefleet.unknown_fields import refuse_unknown_fields
from tunefleet.v1 import common_pb2, operator_pb2, operator_pb2_grpc

if TYPE_CHECKING:
    from coordinator.server import CoordinatorServer

__all__ = ["OperatorServicer"]


def _entry(row: dict[str, Any]) -> operator_pb2.AccessEntry:
    return operator_pb2.AccessEntry(key_id=row["key_id"], state=row["state"],
                                    reason=row["reason"], changed_at=row["changed_at"])


class OperatorServicer(operator_pb2_grpc.OperatorServiceServicer):
    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.hub = server.hub_thread

    async def ChangeAccess(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> operator_pb2.AccessReply:
        async def work() -> operator_pb2.AccessReply:
            message, signer = open_envelope(request, operator_pb2.AccessRequest,
                                            max_skew=self.server.max_skew)
            hub = self.server.hub
            await self.hub.call(hub.check_operator, signer)
            # a newer operator tool's condition on the change (a scope, an expiry) is refused
            # by name, never dropped: the change would otherwise take effect without it
            refuse_unknown_fields(message, "request")
            await self.hub.call(hub.accept, signer, request.seq)
            entry, outbox, end_nodes, stopped = await self.hub.call(
                hub.change_access, signer, message.key_id, message.action, message.reason)
            await self.server.deliver(outbox)
            for node_id in end_nodes:
                self.server.end_session(node_id)
            return operator_pb2.AccessReply(entry=_entry(entry), sessions_ended=len(end_nodes),
                                            studies_stopped=stopped)

        return await guarded(context, work())

    async def ListAccess(
        self, request: common_pb2.SignedEnvelope, context: grpc.aio.ServicerContext
    ) -> operator_pb2.AccessList:
        async def work() -> operator_pb2.AccessList:
            _, signer = open_envelope(request, operator_pb2.ListAccessRequest,
                                      max_skew=self.server.max_skew)
            await self.hub.call(self.server.hub.check_operator, signer)
            rows = await self.hub.call(self.server.hub.store.list_access)
            return operator_pb2.AccessList(entries=[_entry(r) for r in rows])

        return await guarded(context, work())
