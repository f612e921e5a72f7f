"""Node sessions against a real coordinator: a reconnect replaces the old session cleanly."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client
from tunefleet.envelope import seal
from tunefleet.keys import Identity
from tunefleet.tls import open_channel
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc


class RawSession:
    """A node session driven by hand: ``send`` events, read ``messages``."""

    def __init__(self, stub: node_pb2_grpc.NodeServiceStub, node: Identity,
                 hello: node_pb2.Hello) -> None:
        self.node = node
        self.outgoing: queue.Queue[common_pb2.SignedEnvelope | None] = queue.Queue()
        self.messages: queue.Queue[node_pb2.CoordinatorMessage] = queue.Queue()
        self.send(hello=hello)
        self.call = stub.Session(self._requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[common_pb2.SignedEnvelope]:
        while (item := self.outgoing.get()) is not None:
            yield item

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except Exception:  # the stream ended; the test reads what came before
            pass

    def send(self, **kind: object) -> None:
        self.outgoing.put(seal(self.node, node_pb2.NodeEvent(node_id=self.node.key_id, **kind)))  # type: ignore[arg-type]

    def next(self, kind: str, timeout: float = 10.0) -> node_pb2.CoordinatorMessage:
        while True:
            message = self.messages.get(timeout=timeout)
            if message.WhichOneof("kind") == kind:
                return message

    def close(self) -> None:
        self.outgoing.put(None)
        self.call.cancel()


def test_a_reconnect_before_the_old_stream_ends_keeps_getting_work(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    identity, _ = researcher_identity()
    with LocalCluster(agents=0, state_dir=tmp_path / "c") as cluster:
        with Client(cluster.address, identity, cluster.security) as client:
            client.submit_file(tiny_train_dir / "study.toml")
        node = Identity.generate()
        inventory = node_pb2.Inventory(cpu_slots=1)
        with open_channel(cluster.address, cluster.security) as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            stub.Register(seal(node, node_pb2.RegisterRequest(name="n", inventory=inventory)))
            first = RawSession(stub, node, node_pb2.Hello(inventory=inventory))
            a = first.next("assignment").assignment
            # The same node opens a second session while the first is still open.
            second = RawSession(stub, node, node_pb2.Hello(inventory=inventory,
                                                           running_attempts=[a.attempt_id]))
            second.send(report=node_pb2.MetricReport(attempt_id=a.attempt_id, seq=1, step=1,
                                                     metrics={"loss": 0.5}))
            assert second.next("report_ack").report_ack.decision == "continue"
            second.send(finished=node_pb2.AttemptFinished(attempt_id=a.attempt_id,
                                                          outcome="completed"))
            assert second.next("finished_ack").finished_ack.attempt_id == a.attempt_id
            # The coordinator still knows the node: the freed slot gets the next trial.
            b = second.next("assignment").assignment
            assert b.attempt_id != a.attempt_id
            first.close()
            second.close()
