"""One coordinator per database and per port: a second one is refused, not let in beside."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from coordinator.server import CoordinatorServer
from tunefleet.errors import InvalidInputError, TunefleetError


def test_a_second_coordinator_on_the_same_database_is_refused_until_the_first_stops(
        tmp_path: Path) -> None:
    # before, two (or three) coordinators served one SQLite file, each with its own schedulers
    # in memory, each deciding and writing what the others never saw
    first = CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0")
    with pytest.raises(TunefleetError, match=r"another coordinator serves .*c.db \(it holds a "
                       r"lock on the file, under this or another name\); stop it first"):
        CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0")
    # before, another name for the same file (a lock file beside each name) let one in
    (tmp_path / "symbolic.db").symlink_to(tmp_path / "c.db")
    os.link(tmp_path / "c.db", tmp_path / "hard.db")
    for alias in ("symbolic.db", "hard.db"):
        with pytest.raises(TunefleetError, match="another coordinator serves"):
            CoordinatorServer(tmp_path / alias, listen="127.0.0.1:0")
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
            # one line that says why (before, grpcio's RuntimeError: a traceback)
            with pytest.raises(TunefleetError, match=f"cannot listen on 127.0.0.1:{port}: the "
                               "port is in use"):
                await second.start()
        finally:
            await second.stop(grace=0)
            await first.stop(grace=0)

    asyncio.run(go())


def test_a_clock_skew_that_would_refuse_every_message_is_refused(tmp_path: Path) -> None:
    for skew in (0.0, -5.0, float("nan")):
        with pytest.raises(InvalidInputError, match="max_skew"):
            CoordinatorServer(tmp_path / "c.db", listen="127.0.0.1:0", max_skew=skew)
    assert not (tmp_path / "c.db").exists()
