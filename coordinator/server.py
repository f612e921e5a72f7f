"""The coordinator process: a grpc.aio server around the hub, plus the lease sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import grpc

from coordinator.decode_guard import DecodeGuard
from coordinator.hub import Hub, NodeEventItem, Outbox
from coordinator.hub_thread import HubThread
from coordinator.node_service import NodeServicer, Received, SessionEnd, Stream
from coordinator.operator_service import OperatorServicer
from coordinator.researcher_service import ResearcherServicer
from coordinator.store import Store
from tunefleet.envelope import DEFAULT_MAX_SKEW, open_envelope
from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.tls import server_credentials
from tunefleet.v1 import node_pb2, node_pb2_grpc, operator_pb2_grpc, researcher_pb2_grpc

__all__ = ["CoordinatorServer", "MAX_MESSAGE_BYTES"]

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BATCH = 512  # node events committed together
INBOX_LIMIT = 20_000  # queued node events before readers wait (backpressure)


_REFUSED_LOCKS: list[IO[bytes]] = []


def serve_lock(db_path: str | Path) -> IO[bytes]:
    """An exclusive lock on the database file itself, held while this process serves it
    (released when the returned file closes, or the process ends). SQLite lets several
    processes write one file, but each study's scheduler lives in the memory of the
    coordinator that serves it: a second one on the same database would decide, and write,
    what the first never sees. The lock is the file's own (``flock``, apart from SQLite's
    ``fcntl`` locks), so another name for it (a symbolic or hard link) is the same file.
    Raises :class:`TunefleetError` while another process holds it.
    """
    lock = Path(db_path).open("ab")  # creates it, empty, as SQLite would
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Kept open: closing any descriptor of the file drops every POSIX lock this process
        # holds on it, SQLite's included, should a coordinator of this process serve it.
        _REFUSED_LOCKS.append(lock)
        raise TunefleetError(f"another coordinator serves {db_path} (it holds a lock on the "
                             "file, under this or another name); stop it first") from None
    return lock


class CoordinatorServer:
    """Owns the store, the hub, its thread, the gRPC server and the node sessions' queues."""

    def __init__(
        self, db_path: str | Path, listen: str = "127.0.0.1:0", lease_seconds: float = 30.0,
        max_attempts: int = 3, tls_dir: Path | None = None, operator_key_id: str | None = None,
        open_admission: bool = False, admit: list[str] | None = None,
        max_skew: float = DEFAULT_MAX_SKEW, price_gpu_hour: float = 1.0,
        price_slot_hour: float = 0.0,
    ) -> None:
        """Serve TLS from ``tls_dir`` (made by ``coordinator init``), or plaintext without one."""
        if not (math.isfinite(max_skew) and max_skew > 0):
            raise InvalidInputError("max_skew", max_skew, "must be a number of seconds > 0")
        self.listen = listen
        self.tls_dir = tls_dir
        self.max_skew = max_skew
        self._lock = serve_lock(db_path)
        self.store = Store(db_path)
        self.hub = Hub(self.store, lease_seconds=lease_seconds, max_attempts=max_attempts,
                       operator_key_id=operator_key_id, open_admission=open_admission,
                       price_gpu_hour=price_gpu_hour, price_slot_hour=price_slot_hour)
        if admit:
            with self.store.atomic():
                for key_id in admit:
                    if (self.store.get_access(key_id) or {}).get("state") != "banned":
                        self.store.set_access(key_id, "admitted", "admitted at start", time.time())
        self.hub_thread = HubThread()
        self.sessions: dict[str, asyncio.Queue[node_pb2.CoordinatorMessage | None]] = {}
        self.stopping = asyncio.Event()  # set at stop: long-lived streams end themselves
        self.ended: dict[str, bool] = {}  # nodes whose session the operator ended
        self.failed: dict[str, BaseException] = {}  # why a node's session must end
        self.inbox: asyncio.Queue[Received | SessionEnd] = asyncio.Queue(maxsize=INBOX_LIMIT)
        # Signatures are checked on their own thread: the check releases the GIL, so it runs
        # beside the event loop instead of on it.
        self._verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")
        self._verified: asyncio.Queue[
            tuple[list[Received | SessionEnd], list[Received], list[NodeEventItem | BaseException]]
        ] = asyncio.Queue(maxsize=1)
        self._checker: asyncio.Task[None] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared with another
        ]
        server = grpc.aio.server(options=options, interceptors=[DecodeGuard()])
        researcher_pb2_grpc.add_ResearcherServiceServicer_to_server(
            ResearcherServicer(self), server
        )
        node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(self), server)
        operator_pb2_grpc.add_OperatorServiceServicer_to_server(OperatorServicer(self), server)
        try:
            if self.tls_dir is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                self.port = server.add_secure_port(self.listen, server_credentials(self.tls_dir))
        except RuntimeError:  # grpcio says only "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise TunefleetError(
                f"cannot listen on {self.listen}: the port is in use, the address is not this "
                "machine's" + ("" if self.tls_dir is None else
                               f", or the certificate and key in {self.tls_dir} do not match"))
        await server.start()
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep())
        self._checker = asyncio.create_task(self._verify_events())
        self._batcher = asyncio.create_task(self._process_events())
        return self.port

    async def _sweep(self) -> None:
        interval = min(1.0, self.hub.lease_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.deliver(await self.hub_thread.call(self.hub.expire_leases))
                await self.deliver(await self.hub_thread.call(self.hub.enforce_limits))
            except Exception:  # keep sweeping whatever one round hit
                log.exception("lease sweep failed")

    async def _verify_events(self) -> None:
        """First stage of the group commit: take the queued node events as a batch and verify
        them on the verifier thread, while the hub commits the batch before."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.inbox.get()]
            while len(batch) < MAX_BATCH and not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            received = [item for item in batch if isinstance(item, Received)]
            try:
                opened = await loop.run_in_executor(self._verifier, self._open_all, received)
            except Exception as exc:  # never seen; the stage must not die: end the senders
                log.exception("verifying a batch of %d node events failed", len(received))
                opened = [exc] * len(received)
            await self._verified.put((batch, received, opened))

    async def _process_events(self) -> None:
        """Second stage: hand each verified batch to the hub in one transaction, then deliver
        the answers in arrival order."""
        while True:
            batch, received, opened = await self._verified.get()
            try:
                await self._commit(batch, received, opened)
            except Exception:  # never seen; the stage must not die: end the senders
                log.exception("handling a batch of %d node events failed", len(received))
                for item in batch:
                    if isinstance(item, Received):
                        self.fail_session(item.node_id, RuntimeError("internal error"))
                    else:
                        item.queue.put_nowait(None)

    async def _commit(self, batch: list[Received | SessionEnd], received: list[Received],
                      opened: list[NodeEventItem | BaseException]) -> None:
        """Commit one verified batch through the hub and deliver its answers in arrival order."""
        events: list[NodeEventItem] = []
        streams: list[Stream] = []
        plan: list[int | tuple[Received, BaseException]] = []
        for item, result in zip(received, opened, strict=True):
            if item.stream.refused:
                continue  # after an envelope that does not verify, the session is over
            if isinstance(result, BaseException):
                item.stream.refused = True
                plan.append((item, result))
            else:
                plan.append(len(events))
                events.append(result)
                streams.append(item.stream)
        ends = [item for item in batch if isinstance(item, SessionEnd)]
        try:
            results = await self.hub_thread.call(self.hub.node_events, events)
        except Exception as exc:  # the commit failed: every sender's session ends
            log.exception("a batch of %d node events failed", len(events))
            results = [exc] * len(events)
        for step in plan:  # in arrival order, so a session ends after its last answer
            if isinstance(step, tuple):
                item, error = step
                self.fail_session(item.node_id, error, item.stream)
                continue
            answer = results[step]
            if isinstance(answer, BaseException):
                self.fail_session(events[step][0], answer, streams[step])
            else:
                await self.deliver(answer)
        for end in ends:  # a node queues its end after its last event
            end.queue.put_nowait(None)

    def _open_all(self, received: list[Received]) -> list[NodeEventItem | BaseException]:
        """Verify and parse each envelope (on the verifier thread)."""
        opened: list[NodeEventItem | BaseException] = []
        for item in received:
            try:
                message, _ = open_envelope(item.envelope, node_pb2.NodeEvent, item.node_id,
                                           max_skew=self.max_skew)
                opened.append((item.node_id, item.envelope.seq, message,
                               item.envelope.SerializeToString()))
            except Exception as exc:
                opened.append(exc)
        return opened

    def fail_session(self, node_id: str, error: BaseException,
                     stream: Stream | None = None) -> None:
        """End a node's session with the status ``error`` maps to; with ``stream``, only if
        that stream's session is still the node's (not one a reconnect replaced)."""
        queue = self.sessions.get(node_id)
        if stream is not None and stream.queue is not None and stream.queue is not queue:
            return  # an event of a replaced session: that session has ended already
        if queue is not None and node_id not in self.failed:
            self.failed[node_id] = error
            queue.put_nowait(None)

    def open_session(self, node_id: str) -> asyncio.Queue[node_pb2.CoordinatorMessage | None]:
        old = self.sessions.get(node_id)
        if old is not None:
            old.put_nowait(None)  # a reconnect replaces the old session
        queue: asyncio.Queue[node_pb2.CoordinatorMessage | None] = asyncio.Queue()
        self.sessions[node_id] = queue
        return queue

    def close_session(
        self, node_id: str, queue: asyncio.Queue[node_pb2.CoordinatorMessage | None]
    ) -> bool:
        """Forget a session; False when a newer session of the node has replaced it."""
        if self.sessions.get(node_id) is queue:
            del self.sessions[node_id]
            return True
        return False

    def end_session(self, node_id: str) -> None:
        """Close a node's session (the operator banned it)."""
        queue = self.sessions.get(node_id)
        if queue is not None:
            self.ended[node_id] = True
            queue.put_nowait(None)

    async def deliver(self, outbox: Outbox) -> None:
        for node_id, message in outbox:
            queue = self.sessions.get(node_id)
            if queue is not None:
                queue.put_nowait(message)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace: float = 2.0) -> None:
        self.stopping.set()
        for task in (self._sweeper, self._checker, self._batcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for queue in self.sessions.values():
            queue.put_nowait(None)
        if self._server is not None:
            await self._server.stop(grace)
        self.hub_thread.shutdown()
        self._verifier.shutdown(wait=True)
        self.store.close()
        self._lock.close()  # releases the lock
