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
