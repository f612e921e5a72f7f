"""The operator's CLI on a real database: the ledger, and refused serve flags."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from coordinator.cli import main
from coordinator.hub import Hub
from coordinator.store import Store
from tests.coordinator.test_hub import DIGEST, Clock, connect, finish, make_spec, report, submit
from tunefleet.v1 import node_pb2


def test_the_ledger_shows_what_providers_earned_and_researchers_spent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, clock = Store(tmp_path / "c.db"), Clock()
    hub = Hub(store, clock=clock, price_gpu_hour=2.0, price_slot_hour=0.5)
    hub.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    submit(hub, make_spec(budget={"max_trials": 1},
                          resources={"gpus": 1, "min_gpu_memory_gb": 1}), owner="alice")
    submit(hub, make_spec(budget={"max_trials": 1}), owner="bob")
    [a] = connect(hub, "gpu-node", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    [b] = connect(hub, "cpu-node", cpu_slots=1)
    clock.now += 360  # 0.1 h each
    report(hub, "gpu-node", a.attempt_id, 1, 1, 0.5)
    hub.finished("gpu-node", node_pb2.AttemptFinished(
        attempt_id=a.attempt_id, outcome="completed", gpu_utilization=81.0,
        gpu_memory_peak_gb=3.0))
    report(hub, "cpu-node", b.attempt_id, 1, 1, 0.5)
    finish(hub, "cpu-node", b.attempt_id)
    store.close()
    assert main(["ledger", "--db", str(tmp_path / "c.db"), "--json"]) == 0
    ledger = json.loads(capsys.readouterr().out)
    earned = {p["node_id"]: p for p in ledger["providers"]}
    assert earned["gpu-node"]["credits"] == pytest.approx(0.1 * 2 + 0.1 * 0.5)
    assert earned["cpu-node"]["credits"] == pytest.approx(0.1 * 0.5)
    assert earned["gpu-node"]["gpu_hours"] == pytest.approx(0.1)
    spent = {r["key_id"]: r for r in ledger["researchers"]}
    assert spent["alice"]["credits"] == pytest.approx(0.25) and spent["bob"]["studies"] == 1
    assert main(["ledger", "--db", str(tmp_path / "c.db")]) == 0
    table = capsys.readouterr().out
    assert "providers (earned)" in table and "researchers (spent)" in table
    assert "0.250" in table and "0.050" in table
    assert main(["studies", "--db", str(tmp_path / "c.db"), "--json"]) == 0
    studies = {r["credits"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(studies) == [pytest.approx(0.05), pytest.approx(0.25)]
    assert max(r["gpu_hours"] for r in studies.values()) == pytest.approx(0.1)
    assert main(["nodes", "--db", str(tmp_path / "c.db"), "--json"]) == 0
    nodes = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (nodes["gpu-node"]["gpu_utilization"], nodes["cpu-node"]["gpu_utilization"]) == (
        81.0, None)
    assert main(["nodes", "--db", str(tmp_path / "c.db")]) == 0
    assert "gpu%" in capsys.readouterr().out


def test_nodes_shows_when_each_was_last_seen_its_ban_and_escapes_stored_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, clock = Store(tmp_path / "c.db"), Clock()
    hub = Hub(store, clock=clock, operator_key_id="op")
    connect(hub, "a" * 32)
    connect(hub, "b" * 32)
    hub.change_access("op", "b" * 32, "ban", "faked results")
    with store.atomic():  # a name stored before names were checked
        store.conn.execute("UPDATE nodes SET name = ?, last_seen = ? WHERE id = ?",
                           ("x\n0000\x1b[31mRED", time.time() - 7200, "a" * 32))
    store.close()
    assert main(["nodes", "--db", str(tmp_path / "c.db")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "x\\n0000\\x1b[31mRED"[:19] in out
    lines = {line[:32]: line for line in out.splitlines()}
    assert lines["a" * 32].split()[-1] == "2h" and "BANNED" not in lines["a" * 32]
    assert lines["b" * 32].endswith(" BANNED")


@pytest.mark.parametrize("flag", ["--price-gpu-hour", "--price-slot-hour"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_price_that_is_no_number_of_credits_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert main(["serve", "--insecure", "--db", str(tmp_path / "c.db"), flag, value]) == 2
    assert f"{flag}: got {float(value)}; must be a number of credits >= 0" in (
        capsys.readouterr().err)
    assert not (tmp_path / "c.db").exists()


@pytest.mark.parametrize("args, expected", [
    # before, accepted: every signed message was then refused as "stale by 0s"
    (["--max-clock-skew", "-5"], "--max-clock-skew: got -5.0; must be a number of seconds in"),
    (["--max-clock-skew", "nan"], "--max-clock-skew: got nan;"),
    # before, accepted: nan failed every submission with an IntegrityError, 0.1 lost every
    # attempt before its first heartbeat
    (["--lease-seconds", "nan"], "--lease-seconds: got nan; must be a number of seconds in [1,"),
    (["--lease-seconds", "0.1"], "--lease-seconds: got 0.1;"),
    (["--lease-seconds", "inf"], "--lease-seconds: got inf;"),
    (["--max-attempts", "0"], "--max-attempts: got 0; must be an integer in [1, 100]"),
    # before, a traceback, or a port taken modulo 65536, or 443
    (["--listen", "127.0.0.1:99999"], "--listen: got '127.0.0.1:99999'; must be HOST:PORT"),
    (["--listen", "127.0.0.1"], "--listen: got '127.0.0.1';"),
    (["--listen", "7070"], "--listen: got '7070';"),
    (["--listen", "127.0.0.1:abc"], "--listen: got '127.0.0.1:abc';"),
    (["--listen", "127.0.0.1:\u00b2"], "--listen: got '127.0.0.1:\u00b2';"),  # a digit to isdigit
    # before, stored as admitted: no key matched them, and no command could remove them
    (["--admit", "nothex"], "--admit: got 'nothex'; must be a researcher's 32-character"),
    (["--admit", "4AB7E00CDD773661335D09A28B45A01D"], "--admit: got '4AB7E00CDD"),
])
def test_serve_flags_out_of_range_are_refused_before_the_database_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["serve", "--insecure", "--db", str(tmp_path / "c.db"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, expected", [
    ("foreign", "is not a tunefleet coordinator's: it holds tables (foo) but no schema_migr"),
    ("newer", "database schema version 99 is newer than this coordinator knows"),
    ("text", "file is not a database"),
])
def test_serve_refuses_a_database_it_cannot_use_in_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    import sqlite3

    db = tmp_path / "c.db"
    if content == "text":
        db.write_text("not a database at all, just some text that is long enough" * 20)
    else:
        with sqlite3.connect(db) as conn:
            if content == "foreign":
                conn.execute("CREATE TABLE foo (x)")
            else:
                conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                             "applied_at REAL)")
                conn.execute("INSERT INTO schema_migrations VALUES (99, 0)")
        conn.close()
    before = db.read_bytes()
    assert main(["serve", "--insecure", "--db", str(db), "--listen", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot use the database {db}: " in err[0] and expected in err[0]
    assert db.read_bytes() == before  # before, a foreign database got tunefleet's tables


def test_the_ledger_of_a_database_from_before_it_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    odd = tmp_path / "odd dir #1" / "c.db"  # a path that is no plain URI
    odd.parent.mkdir()
    with sqlite3.connect(odd) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
        conn.executemany("INSERT INTO schema_migrations VALUES (?, 0)", [(v,) for v in range(1, 6)])
    conn.close()
    assert main(["ledger", "--db", str(odd)]) == 1
    assert "is from a coordinator before the ledger; start this coordinator on it once" in (
        capsys.readouterr().err)
    assert sorted(p.name for p in odd.parent.iterdir()) == ["c.db"]  # read, never written
