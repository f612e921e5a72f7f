"""The operator's command line: ``coordinator serve`` and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc

from coordinator.hub import MIN_LEASE_SECONDS
from coordinator.models import TrialState
from coordinator.server import CoordinatorServer
from coordinator.store import USAGE_COLUMNS
from tunefleet.connection import add_connection_args, connection_from
from tunefleet.envelope import seal
from tunefleet.errors import TunefleetError
from tunefleet.keys import load
from tunefleet.tls import init_authority, open_channel
from tunefleet.v1 import node_pb2, operator_pb2, operator_pb2_grpc

__all__ = ["main"]

LEDGER_VERSION = 6  # the migration that prices attempts
GPU_USE_VERSION = 5  # the migration that keeps each attempt's measured GPU use
DEFAULT_DB = "tunefleet.db"
DEFAULT_TLS_DIR = "tunefleet-tls"


def _operator_args(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.add_argument("--operator-key", type=Path, default=Path(DEFAULT_TLS_DIR) / "operator.key",
                   help=f"the operator's key (default: {DEFAULT_TLS_DIR}/operator.key)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="Run and inspect a tunefleet coordinator: it stores studies, schedules "
        "trials and leases them to node agents over gRPC.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve researchers and node agents until interrupted")
    serve.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default: {DEFAULT_DB})")
    serve.add_argument(
        "--listen", default="127.0.0.1:7070",
        help="HOST:PORT to listen on; port 0 picks a free one (default: 127.0.0.1:7070)",
    )
    serve.add_argument(
        "--lease-seconds", type=float, default=30.0,
        help="an attempt whose node stays silent this long is lost and retried (default: 30)",
    )
    serve.add_argument(
        "--max-attempts", type=int, default=3,
        help="attempts per trial before it is failed (default: 3); a trial that fails the same "
             "way on two nodes is failed at once",
    )
    serve.add_argument(
        "--price-gpu-hour", type=float, default=1.0, metavar="CREDITS",
        help="credits an attempt costs its researcher, and earns its provider, per GPU-hour "
        "it holds (default: 1)",
    )
    serve.add_argument(
        "--price-slot-hour", type=float, default=0.0, metavar="CREDITS",
        help="credits per hour an attempt holds a slot, on top of its GPUs; prices CPU slots "
        "(default: 0)",
    )
    serve.add_argument(
        "--tls-dir", type=Path, default=Path(DEFAULT_TLS_DIR),
        help=f"certificates made by `coordinator init` (default: {DEFAULT_TLS_DIR})",
    )
    serve.add_argument("--insecure", action="store_true",
                       help="serve plaintext (local development only; no --tls-dir needed)")
    serve.add_argument(
        "--operator-key", type=Path, default=None,
        help="the operator's Ed25519 key (default: TLS_DIR/operator.key when it exists)",
    )
    serve.add_argument("--open", action="store_true",
                       help="admit every researcher key (default: only admitted keys submit)")
    serve.add_argument("--admit", action="append", default=[], metavar="KEY_ID",
                       help="admit this researcher key id at start (repeatable)")
    serve.add_argument("--max-clock-skew", type=float, default=60.0,
                       help="signed messages older or newer than this many seconds are refused "
                       "(default: 60)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log every lease and report")
    init = sub.add_parser("init", help="create a local CA, the server certificate and the "
                          "operator key, in one directory")
    init.add_argument("--dir", type=Path, default=Path(DEFAULT_TLS_DIR),
                      help=f"where to write them (default: {DEFAULT_TLS_DIR})")
    init.add_argument("--host", action="append", default=[],
                      help="a name or address agents and clients dial (repeatable; loopback and "
                      "this hostname are always included)")
    for name, text in (("admit", "admit a researcher key"), ("ban", "ban a node or researcher "
                       "key: its sessions end, its running work stops"),
                       ("unban", "lift a ban")):
        p = sub.add_parser(name, help=f"{text} (signed with the operator key)")
        p.add_argument("key_id")
        p.add_argument("--reason", default="",
                       help="why, kept with the entry and shown by `access` (at most 500 "
                       "characters)")
        _operator_args(p)
    p = sub.add_parser("access", help="list admitted and banned keys")
    _operator_args(p)
    for name, text in (("studies", "list studies"), ("nodes", "list nodes and their GPUs"),
                       ("ledger", "credits: what each provider's node earned and each "
                        "researcher spent")):
        p = sub.add_parser(name, help=f"{text} (reads the database directly)")
        p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default: {DEFAULT_DB})")
        p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _serve_flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``serve``'s flags, as ``FLAG: got VALUE; ALLOWED``; None if nothing."""
    numbers = (
        ("--price-gpu-hour", args.price_gpu_hour, 0.0, math.inf, "a number of credits >= 0"),
        ("--price-slot-hour", args.price_slot_hour, 0.0, math.inf, "a number of credits >= 0"),
        # an agent heartbeats every quarter lease, at most every 0.2 s
        ("--lease-seconds", args.lease_seconds, MIN_LEASE_SECONDS, 86_400.0,
         f"a number of seconds in [{MIN_LEASE_SECONDS:g}, 86400]"),
        ("--max-attempts", args.max_attempts, 1, 100, "an integer in [1, 100]"),
        ("--max-clock-skew", args.max_clock_skew, 1.0, 86_400.0,
         "a number of seconds in [1, 86400]"),
    )
    for flag, value, low, high, allowed in numbers:
        if not (math.isfinite(value) and low <= value <= high):
            return f"{flag}: got {value}; must be {allowed}"
    host, sep, port = args.listen.rpartition(":")
    if not (sep and host and port.isascii() and port.isdigit() and int(port) <= 65535):
        return (f"--listen: got {args.listen!r}; must be HOST:PORT with a port in [0, 65535] "
                "(0 picks a free one)")
    for key_id in args.admit:
        if len(key_id) != 32 or any(c not in "0123456789abcdef" for c in key_id):
            return (f"--admit: got {key_id!r}; must be a researcher's 32-character key id, in "
                    "lowercase hex (`tunefleet keygen` prints it)")
    db = Path(args.db)
    if not db.parent.is_dir():
        return f"--db: got {args.db!r}; its directory does not exist"
    if db.is_dir():
        return f"--db: got {args.db!r}; must be a file, not a directory"
    return None


async def _serve(args: argparse.Namespace) -> None:
    operator_key = args.operator_key
    if operator_key is None and (args.tls_dir / "operator.key").exists():
        operator_key = args.tls_dir / "operator.key"
    operator_id = load(operator_key).key_id if operator_key is not None else None
    server = CoordinatorServer(
        args.db, args.listen, args.lease_seconds, args.max_attempts,
        tls_dir=None if args.insecure else args.tls_dir, operator_key_id=operator_id,
        open_admission=args.open, admit=args.admit, max_skew=args.max_clock_skew,
        price_gpu_hour=args.price_gpu_hour, price_slot_hour=args.price_slot_hour,
    )
    port = await server.start()
    host = args.listen.rsplit(":", 1)[0]
    mode = "plaintext (--insecure)" if args.insecure else f"TLS from {args.tls_dir}"
    print(f"coordinator listening on {host}:{port}", flush=True)
    print(f"  {mode}; admission: {'open' if args.open else 'admitted keys only'}; "
          f"operator key: {operator_id or 'none'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def _read_only(path: str) -> sqlite3.Connection:
    """The database for reading, never created or migrated by an inspection command."""
    if not Path(path).is_file():
        raise TunefleetError(f"no database at {path}; pass --db PATH of a coordinator's database")
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _studies(args: argparse.Namespace) -> None:
    with closing(_read_only(args.db)) as conn:
        rows = _study_rows(conn)
    _print_studies(rows, args.json)


def _study_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    priced = _schema_version(conn) >= LEDGER_VERSION
    for study in conn.execute("SELECT id, name, state FROM studies ORDER BY created_at"):
        counts = {s.value: 0 for s in TrialState}
        for state, n in conn.execute(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = ? GROUP BY state", (study["id"],)
        ):
            counts[state] = n
        gpu = credits = 0.0
        if priced:  # its cost so far, running attempts up to now
            gpu, _, credits = conn.execute(
                f"SELECT {USAGE_COLUMNS} FROM attempts WHERE study_id = :study",
                {"now": time.time(), "study": study["id"]}).fetchone()
        rows.append({"id": study["id"], "name": study["name"], "state": study["state"], **counts,
                     "gpu_hours": gpu / 3600, "credits": credits})
    return rows


def _print_studies(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'id':<14}{'name':<24}{'state':<11}{'done':>6}{'run':>5}{'pend':>6}{'fail':>6}"
          f"{'GPU-h':>9}{'credits':>10}")
    for r in rows:
        done = r["completed"] + r["pruned"]
        print(f"{r['id']:<14}{r['name'][:23]:<24}{r['state']:<11}{done:>6}{r['running']:>5}"
              f"{r['pending']:>6}{r['failed']:>6}{r['gpu_hours']:>9.3f}{r['credits']:>10.3f}")


def _nodes(args: argparse.Namespace) -> None:
    with closing(_read_only(args.db)) as conn:
        running = dict(conn.execute(
            "SELECT node_id, COUNT(*) FROM attempts WHERE state = 'running' GROUP BY node_id"
        ).fetchall())
        use: dict[str, float] = {}
        if _schema_version(conn) >= GPU_USE_VERSION:  # the mean of its last 20 measured trials
            use = dict(conn.execute(
                "SELECT node_id, AVG(gpu_utilization) FROM (SELECT node_id, gpu_utilization, "
                "ROW_NUMBER() OVER (PARTITION BY node_id ORDER BY id DESC) AS k FROM attempts "
                "WHERE gpu_utilization IS NOT NULL) WHERE k <= 20 GROUP BY node_id"
            ).fetchall())
        banned = {r[0] for r in conn.execute("SELECT key_id FROM access WHERE state = 'banned'")
                  } if "access" in _tables(conn) else set()
        rows: list[dict[str, Any]] = []
        for node in conn.execute("SELECT * FROM nodes ORDER BY registered_at"):
            inv = node_pb2.Inventory.FromString(node["inventory"])
            rows.append({
                "id": node["id"], "name": node["name"], "gpus": [g.name for g in inv.gpus],
                "cpu_slots": inv.cpu_slots, "running": running.get(node["id"], 0),
                # Databases from before migration 3 have no reputation yet.
                "reputation": node["reputation"] if "reputation" in node.keys() else 1.0,
                "flagged": bool(node["flagged"]) if "flagged" in node.keys() else False,
                "last_seen": node["last_seen"], "banned": node["id"] in banned,
                "gpu_utilization": use.get(node["id"]),
            })
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    now = time.time()
    print(f"{'id':<34}{'name':<20}{'gpus':<30}{'cpu':>4}{'run':>5}{'rep':>6}{'gpu%':>6}"
          f"{'seen':>7}")
    for r in rows:
        gpus = ", ".join(_shown(g) for g in r["gpus"]) or "-"
        flag = (" FLAGGED" if r["flagged"] else "") + (" BANNED" if r["banned"] else "")
        util = "-" if r["gpu_utilization"] is None else f"{r['gpu_utilization']:.0f}"
        print(f"{r['id']:<34}{_shown(r['name'])[:19]:<20}{gpus[:29]:<30}{r['cpu_slots']:>4}"
              f"{r['running']:>5}{r['reputation']:>6.2f}{util:>6}"
              f"{_ago(now - r['last_seen']):>7}{flag}")


def _shown(text: str) -> str:
    """``text`` for a terminal: control characters (a provider's node name may hold line
    breaks and escape sequences) written as escapes."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _ago(seconds: float) -> str:
    """How long ago, in the largest unit: ``12s``, ``5m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _schema_version(conn: sqlite3.Connection) -> int:
    """The migrations a database has had, read without writing (0 for none)."""
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


def _ledger(args: argparse.Namespace) -> None:
    """Credits per provider node and per researcher key, from the attempts and the prices each
    was leased at (running attempts up to now)."""
    now = time.time()
    with closing(_read_only(args.db)) as conn:
        if _schema_version(conn) < LEDGER_VERSION:
            raise TunefleetError(f"the database {args.db} is from a coordinator before the "
                                 "ledger; start this coordinator on it once to migrate it")
        names = dict(conn.execute("SELECT id, name FROM nodes").fetchall())
        providers = [
            {"node_id": node, "name": names.get(node, ""), "attempts": n,
             "gpu_hours": gpu / 3600, "slot_hours": slot / 3600, "credits": credits}
            for node, n, gpu, slot, credits in conn.execute(
                f"SELECT node_id, COUNT(*), {USAGE_COLUMNS} FROM attempts GROUP BY node_id "
                "ORDER BY node_id", {"now": now})
        ]
        researchers = [
            {"key_id": owner, "studies": n, "gpu_hours": gpu / 3600, "slot_hours": slot / 3600,
             "credits": credits}
            for owner, n, gpu, slot, credits in conn.execute(
                f"SELECT owner, COUNT(DISTINCT study_id), {USAGE_COLUMNS} FROM (SELECT "
                "attempts.*, studies.owner_key_id AS owner FROM attempts JOIN studies ON "
                "studies.id = attempts.study_id) GROUP BY owner ORDER BY owner", {"now": now})
        ]
    if args.json:
        print(json.dumps({"providers": providers, "researchers": researchers}, indent=2))
        return
    print("providers (earned)")
    print(f"  {'node':<34}{'name':<20}{'attempts':>9}{'GPU-h':>10}{'slot-h':>10}{'credits':>12}")
    for p in providers:
        print(f"  {p['node_id']:<34}{_shown(p['name'])[:19]:<20}{p['attempts']:>9}{p['gpu_hours']:>10.3f}"
              f"{p['slot_hours']:>10.3f}{p['credits']:>12.3f}")
    print("researchers (spent)")
    print(f"  {'key':<34}{'studies':>8}{'GPU-h':>10}{'slot-h':>10}{'credits':>12}")
    for r in researchers:
        print(f"  {r['key_id']:<34}{r['studies']:>8}{r['gpu_hours']:>10.3f}"
              f"{r['slot_hours']:>10.3f}{r['credits']:>12.3f}")


def _operator_call(args: argparse.Namespace) -> int:
    address, security = connection_from(args)
    identity = load(args.operator_key)
    with open_channel(address, security) as channel:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        try:
            if args.command == "access":
                reply = stub.ListAccess(seal(identity, operator_pb2.ListAccessRequest()),
                                        timeout=30)
                for e in reply.entries:
                    print(f"{e.key_id}  {e.state:<9} {_shown(e.reason)}")
                if not reply.entries:
                    print("no key is admitted or banned", file=sys.stderr)
                return 0
            was_banned = False
            if args.command == "unban":  # whether there is a ban to lift, to say what changed
                listed = stub.ListAccess(seal(identity, operator_pb2.ListAccessRequest()),
                                         timeout=30)
                was_banned = any(e.key_id == args.key_id and e.state == "banned"
                                 for e in listed.entries)
            request = operator_pb2.AccessRequest(key_id=args.key_id, action=args.command,
                                                 reason=args.reason)
            result = stub.ChangeAccess(seal(identity, request), timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            print(f"coordinator: error: {code.name}: {exc.details()}",  # type: ignore[attr-defined]
                  file=sys.stderr)
            return 1
    entry = result.entry
    state = entry.state or "no entry"
    if args.command == "unban" and not was_banned:
        state += " (it was not banned: nothing changed)"
    elif args.command == "unban":  # the ban replaced any admission
        state += (f" (no longer banned; a researcher key needs `coordinator admit "
                  f"{entry.key_id}` again to submit, unless the coordinator admits everyone)")
    print(f"{entry.key_id}: {state}"
          + (f"; {result.sessions_ended} session(s) ended" if result.sessions_ended else "")
          + (f"; {result.studies_stopped} study(ies) stopped" if result.studies_stopped else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "init":
            operator = init_authority(args.dir, args.host)
            print(f"wrote a CA, a server certificate and the operator key to {args.dir}/")
            print(f"  give agents and researchers {args.dir / 'ca.pem'} (--ca); keep ca.key, "
                  "server.key and operator.key private")
            print(f"  operator key id: {operator.key_id}")
            print(f"next: coordinator serve --tls-dir {args.dir}")
        elif args.command in ("admit", "ban", "unban", "access"):
            return _operator_call(args)
        elif args.command == "serve":
            if not args.insecure and not (args.tls_dir / "server.pem").exists():
                print(f"coordinator: error: no TLS certificate in {args.tls_dir}: run "
                      f"`coordinator init --dir {args.tls_dir}`, or pass --insecure for "
                      "plaintext local development", file=sys.stderr)
                return 2
            problem = _serve_flag_problem(args)
            if problem is not None:  # before the database is created or locked
                print(f"coordinator: error: {problem}", file=sys.stderr)
                return 2
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(args))
        elif args.command == "studies":
            _studies(args)
        elif args.command == "nodes":
            _nodes(args)
        elif args.command == "ledger":
            _ledger(args)
    except (TunefleetError, OSError, sqlite3.Error) as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
