"""One coordinator per database and per port: a second one is refused, not let in beside."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.server import CoordinatorServer
from tunefleet.errors import TunefleetError


def test_a_second_coordinator_on_the_same_database_is_refused_until_the_first_stops(
        tmp_path: Path) -> None:
    # before, two (or three) coordinators served one SQLite file, each with its own schedulers
    # in memory, each deciding and writing what the others never saw
    first = CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0")
    with pytest.raises(TunefleetError, match=r"another coordinator serves .*c.db \(it holds "
                       r".*c.db.lock\); stop it first"):
        CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0")
    asyncio.run(first.stop(grace=0))
    again = CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0")  # the lock went with it
    asyncio.run(again.stop(grace=0))


def test_a_port_in_use_is_an_error_not_shared(tmp_path: Path) -> None:
    # before, gRPC's SO_REUSEPORT let a second coordinator listen on the same port, and new
    # connections were split between two unrelated coordinators
    async def go() -> None:
        first = CoordinatorServer(tmp_path / "a.db", listen="127.0.0.1:0")
        port = await first.start()
        second = CoordinatorServer(tmp_path / "b.db", listen=f"127.0.0.1:{port}")
        try:
            with pytest.raises((OSError, RuntimeError), match=f"127.0.0.1:{port}"):
                await second.start()
        finally:
            await second.stop(grace=0)
            await first.stop(grace=0)

    asyncio.run(go())
