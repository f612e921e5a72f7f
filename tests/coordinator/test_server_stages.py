"""The coordinator's two-stage group commit keeps going when a stage hits an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.node_service import Received, SessionEnd, Stream
from coordinator.server import CoordinatorServer
from tunefleet.v1 import common_pb2


def test_a_batch_that_cannot_be_verified_ends_its_senders_and_the_stages_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = CoordinatorServer(tmp_path / "c.db")

    def broken(received: list[Received]) -> list[object]:
        raise RuntimeError("verifier broke")

    monkeypatch.setattr(server, "_open_all", broken)

    async def go() -> tuple[object, object, bool, bool]:
        first = server.open_session("n1")
        second = asyncio.Queue()  # type: ignore[var-type]
        stages = [asyncio.create_task(server._verify_events()),
                  asyncio.create_task(server._process_events())]
        await server.inbox.put(Received("n1", common_pb2.SignedEnvelope(), Stream()))
        await server.inbox.put(SessionEnd("n2", second))
        ended_first = await asyncio.wait_for(first.get(), 5)
        ended_second = await asyncio.wait_for(second.get(), 5)
        alive = all(not task.done() for task in stages)  # both stages still serve
        for task in stages:
            task.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        return ended_first, ended_second, alive, "n1" in server.failed

    ended_first, ended_second, alive, failed = asyncio.run(go())
    server.hub_thread.shutdown()
    server.store.close()
    assert ended_first is None and ended_second is None  # both sessions told to end
    assert alive and failed


def test_a_failed_event_of_a_replaced_session_leaves_the_new_session_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = CoordinatorServer(tmp_path / "c.db")
    refusal = RuntimeError("replayed")
    monkeypatch.setattr(server.hub, "node_events", lambda events: [refusal] * len(events))

    async def go() -> tuple[bool, bool]:
        old = server.open_session("n1")
        stale = Stream(old)
        new = server.open_session("n1")  # the node reconnected
        current = Stream(new)
        await old.get()  # the replaced session was told to end
        item = ("n1", 5, common_pb2.SignedEnvelope(), b"")
        await server._commit([Received("n1", common_pb2.SignedEnvelope(), stale)],
                             [Received("n1", common_pb2.SignedEnvelope(), stale)], [item])
        spared = new.empty() and "n1" not in server.failed
        await server._commit([Received("n1", common_pb2.SignedEnvelope(), current)],
                             [Received("n1", common_pb2.SignedEnvelope(), current)], [item])
        return spared, "n1" in server.failed and await new.get() is None

    spared, ended = asyncio.run(go())
    server.hub_thread.shutdown()
    server.store.close()
    assert spared  # a late event of the old session does not end the new one
    assert ended  # the same failure on the current session ends it
