"""The operator's command line: ``coordinator serve`` and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from coordinator.models import TrialState
from coordinator.server import CoordinatorServer
from coordinator.store import Store
from tunefleet.errors import TunefleetError
from tunefleet.v1 import node_pb2

__all__ = ["main"]

DEFAULT_DB = "tunefleet.db"


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
        help="attempts per trial before it is failed (default: 3)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log every lease and report")
    for name, text in (("studies", "list studies"), ("nodes", "list nodes and their GPUs")):
        p = sub.add_parser(name, help=f"{text} (reads the database directly)")
        p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default: {DEFAULT_DB})")
        p.add_argument("--json", action="store_true", help="print JSON")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = CoordinatorServer(args.db, args.listen, args.lease_seconds, args.max_attempts)
    port = await server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"coordinator listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def _studies(args: argparse.Namespace) -> None:
    store = Store(args.db)
    rows: list[dict[str, Any]] = []
    for study in store.list_studies():
        counts = store.trial_counts(study.id)
        rows.append({"id": study.id, "name": study.name, "state": study.state.value,
                     **{s.value: counts[s] for s in TrialState}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'id':<14}{'name':<24}{'state':<11}{'done':>6}{'run':>5}{'pend':>6}{'fail':>6}")
    for r in rows:
        done = r["completed"] + r["pruned"]
        print(f"{r['id']:<14}{r['name'][:23]:<24}{r['state']:<11}{done:>6}{r['running']:>5}"
              f"{r['pending']:>6}{r['failed']:>6}")


def _nodes(args: argparse.Namespace) -> None:
    store = Store(args.db)
    running: dict[str, int] = {}
    for attempt in store.running_attempts():
        running[attempt.node_id] = running.get(attempt.node_id, 0) + 1
    rows: list[dict[str, Any]] = []
    for node in store.list_nodes():
        inv = node_pb2.Inventory.FromString(node.inventory)
        rows.append({
            "id": node.id, "name": node.name, "gpus": [g.name for g in inv.gpus],
            "cpu_slots": inv.cpu_slots, "running": running.get(node.id, 0),
            "last_seen": node.last_seen,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'id':<34}{'name':<20}{'gpus':<30}{'cpu':>4}{'run':>5}")
    for r in rows:
        gpus = ", ".join(r["gpus"]) or "-"
        print(f"{r['id']:<34}{r['name'][:19]:<20}{gpus[:29]:<30}{r['cpu_slots']:>4}"
              f"{r['running']:>5}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            if not Path(args.db).parent.exists():
                print(f"coordinator: error: directory of --db {args.db} does not exist",
                      file=sys.stderr)
                return 2
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(args))
        elif args.command == "studies":
            _studies(args)
        elif args.command == "nodes":
            _nodes(args)
    except (TunefleetError, OSError) as exc:
        print(f"coordinator: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
