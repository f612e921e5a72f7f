#!/usr/bin/env python
"""Coordinator throughput and latency: many simulated nodes stream signed reports.

    python scripts/bench_coordinator.py --nodes 1000 --seconds 20

Starts a real coordinator process (TLS, its own SQLite file), registers ``--nodes`` simulated
nodes, each holding one long-lived session and one leased attempt, and has them send signed
metric reports as fast as the coordinator acknowledges them, with up to ``--window`` reports in
flight per node. Prints the reports persisted per second (counted in the database) and the
report-to-decision latency (send to acknowledgement) percentiles. The load generator runs in
this process on the same machine, so it competes with the coordinator for the CPU: the figure
is a floor, and it is printed next to the cost of the load generator alone (signing).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from client.local import LocalCluster
from client.sdk import Client
from tunefleet.envelope import seal
from tunefleet.keys import Identity
from tunefleet.tls import open_channel
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc

STUDY = """name = "load"
[objective]
metric = "loss"
[budget]
max_trials = {trials}
[search]
searcher = "{searcher}"
scheduler = "{scheduler}"
[fidelity]
max = 1000000
[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
[verification]
best = false
"""


class Node:
    def __init__(self, stub: node_pb2_grpc.NodeServiceStub, window: int,
                 interval: float = 0.0) -> None:
        self.interval = interval
        self.identity = Identity.generate()
        self.stub = stub
        self.window = window
        self.queue: asyncio.Queue[common_pb2.SignedEnvelope | None] = asyncio.Queue()
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.acked = 0
        self.attempt: int | None = None
        self.ready = asyncio.Event()
        self.slots = asyncio.Semaphore(window)

    def event(self, **kind: object) -> common_pb2.SignedEnvelope:
        return seal(self.identity, node_pb2.NodeEvent(node_id=self.identity.key_id, **kind))  # type: ignore[arg-type]

    async def requests(self):  # type: ignore[no-untyped-def]
        while (item := await self.queue.get()) is not None:
            yield item

    async def run(self, stop: asyncio.Event) -> None:
        inventory = node_pb2.Inventory(cpu_slots=1)
        await self.stub.Register(seal(self.identity, node_pb2.RegisterRequest(
            name="load", inventory=inventory)))
        self.queue.put_nowait(self.event(hello=node_pb2.Hello(inventory=inventory)))
        call = self.stub.Session(self.requests())
        sender = asyncio.create_task(self.send(stop))
        async for message in call:
            kind = message.WhichOneof("kind")
            if kind == "assignment" and self.attempt is None:
                self.attempt = message.assignment.attempt_id
                self.ready.set()
            elif kind == "report_ack":
                started = self.sent.pop(message.report_ack.seq, None)
                if started is not None:
                    self.latencies.append(time.perf_counter() - started)
                    self.acked += 1
                    self.slots.release()
            if stop.is_set() and not self.sent:
                break
        sender.cancel()
        self.queue.put_nowait(None)

    async def send(self, stop: asyncio.Event) -> None:
        await self.ready.wait()
        seq = 0
        if self.interval:  # spread the nodes' sends evenly over one interval
            await asyncio.sleep(random.uniform(0, self.interval))
        while not stop.is_set():
            await self.slots.acquire()
            if self.interval:
                await asyncio.sleep(self.interval)
            seq += 1
            report = node_pb2.MetricReport(attempt_id=self.attempt or 0, seq=seq, step=seq,
                                           metrics={"loss": 1.0 / seq})
            envelope = self.event(report=report)
            self.sent[seq] = time.perf_counter()
            self.queue.put_nowait(envelope)


async def load(cluster: LocalCluster, nodes: int, window: int, seconds: float,
               rate: float = 0.0) -> tuple[list[float], float, int]:
    channels = [open_channel(cluster.address, cluster.security, aio=True)
                for _ in range(max(1, nodes // 100))]
    stubs = [node_pb2_grpc.NodeServiceStub(c) for c in channels]
    stop = asyncio.Event()
    interval = nodes / rate if rate else 0.0
    sims = [Node(stubs[i % len(stubs)], window, interval) for i in range(nodes)]
    tasks = [asyncio.create_task(s.run(stop)) for s in sims]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in sims)), 120)
    before = _count(cluster.db_path)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    after = _count(cluster.db_path)
    await asyncio.wait(tasks, timeout=10)
    for c in channels:
        await c.close()
    return [x for s in sims for x in s.latencies], (after - before) / elapsed, after


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])


def signing_rate(n: int = 3000) -> float:
    identity = Identity.generate()
    report = node_pb2.NodeEvent(report=node_pb2.MetricReport(attempt_id=1, seq=1, step=1,
                                                             metrics={"loss": 0.5}))
    started = time.perf_counter()
    for _ in range(n):
        seal(identity, report)
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--window", type=int, default=4, help="reports in flight per node")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="total offered reports per second (default: as fast as acknowledged)")
    parser.add_argument("--searcher", default="random")
    parser.add_argument("--scheduler", default="fifo")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunefleet-bench-"))
    study = root / "study"
    study.mkdir()
    (study / "train.py").write_text("pass\n")
    (study / "study.toml").write_text(STUDY.format(trials=args.nodes, searcher=args.searcher,
                                                   scheduler=args.scheduler))
    with LocalCluster(0, state_dir=root / "cluster", lease_seconds=120.0) as cluster:
        with Client(cluster.address, Identity.generate(), cluster.security) as client:
            client.submit_file(study / "study.toml")
        latencies, rate, total = asyncio.run(
            load(cluster, args.nodes, args.window, args.seconds, args.rate))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    offered = f"offered {args.rate:,.0f}/s" if args.rate else "offered: as fast as acknowledged"
    print(f"nodes {args.nodes}, window {args.window}, {args.searcher}+{args.scheduler}, "
          f"{args.seconds:.0f}s, {offered}")
    print(f"reports persisted: {rate:,.0f}/s ({total:,} in all)")
    if latencies:
        print(f"report-to-decision latency: p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, "
              f"mean {statistics.fmean(latencies) * 1000:.1f} ms")
    print(f"load generator alone signs {signing_rate():,.0f} reports/s on one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
