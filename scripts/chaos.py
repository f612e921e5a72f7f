#!/usr/bin/env python
"""Chaos run: a study on several local agents while agents, children and the coordinator are
killed with SIGKILL at random moments; then the invariants are checked.

    python scripts/chaos.py                 # default run (about a minute)
    python scripts/chaos.py --kills 4 --trials 8 --json

Checked at the end:
- the study completes and every trial ends in exactly one final state;
- every report is stored once: (attempt, seq) is unique and no trial's scheduler events repeat a
  step; each completed trial's final attempt has every step 1..max exactly once;
- no acknowledged report is missing: every (attempt, seq) an agent saw acknowledged (its
  ``--ack-log``) is in the database;
- no attempt is left running.
Exit status 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client

STUDY = """name = "chaos"
[objective]
metric = "loss"
[budget]
max_trials = {trials}
[search]
searcher = "random"
scheduler = "{scheduler}"
seed = {seed}
[fidelity]
max = {steps}
[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
"""

TRAIN = """import time
from tunefleet import trial
for step in range(1, trial.max_step + 1):
    time.sleep({delay})
    trial.report(step, loss=trial.params["x"] + 1.0 / step)
    if trial.should_stop():
        break
"""


def _children(home: Path) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(str(home / "work")):
                    pids.append(int(pid))
            except OSError:
                continue
    return pids


def _query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def check(db: Path, study_id: str, steps: int, ack_logs: list[Path]) -> dict[str, Any]:
    """The invariants; returns the figures and a list of violations (empty when all hold)."""
    problems: list[str] = []
    (state,), = _query(db, "SELECT state FROM studies WHERE id = ?", (study_id,))
    if state != "completed":
        problems.append(f"study is {state}, not completed")
    trials = _query(db, "SELECT number, state FROM trials WHERE study_id = ?", (study_id,))
    states = Counter(s for _, s in trials)
    unfinished = [n for n, s in trials if s not in ("completed", "pruned", "failed")]
    if unfinished:
        problems.append(f"trials not in a final state: {unfinished}")
    reports = _query(db, "SELECT attempt_id, seq FROM reports WHERE study_id = ?", (study_id,))
    duplicates = len(reports) - len(set(reports))
    events = _query(db, "SELECT trial_number, step FROM scheduler_events WHERE study_id = ? "
                        "AND kind = 'report'", (study_id,))
    counted_twice = len(events) - len(set(events))
    for number, trial_state in trials:
        if trial_state != "completed":
            continue
        final = _query(db, "SELECT id FROM attempts WHERE study_id = ? AND trial_number = ? "
                           "AND state = 'completed' AND purpose = 'trial'", (study_id, number))
        if len(final) != 1:
            problems.append(f"trial {number} has {len(final)} completed attempts")
            continue
        got = [s for (s,) in _query(db, "SELECT step FROM reports WHERE attempt_id = ? "
                                        "ORDER BY seq", (final[0][0],))]
        if got != list(range(1, steps + 1)):
            problems.append(f"trial {number}: final attempt has steps {got}")
    acked: set[tuple[int, int]] = set()
    for log in ack_logs:
        if log.exists():
            for line in log.read_text().splitlines():
                if line.strip():
                    item = json.loads(line)
                    acked.add((item["attempt"], item["seq"]))
    stored = set(_query(db, "SELECT attempt_id, seq FROM reports"))
    missing = sorted(acked - stored)
    running = _query(db, "SELECT COUNT(*) FROM attempts WHERE state = 'running'")[0][0]
    if duplicates or counted_twice:
        problems.append(f"{duplicates} duplicate reports, {counted_twice} counted twice")
    if missing:
        problems.append(f"{len(missing)} acknowledged reports missing, e.g. {missing[:3]}")
    if running:
        problems.append(f"{running} attempts still running")
    attempts = Counter(s for (s,) in _query(db, "SELECT state FROM attempts"))
    return {
        "study_state": state, "trials": dict(states), "attempts": dict(attempts),
        "reports": len(reports), "acknowledged_checked": len(acked),
        "acknowledged_missing": len(missing), "duplicates": duplicates,
        "counted_twice": counted_twice, "problems": problems,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="tunefleet-chaos-"))
    bundle = root / "study"
    bundle.mkdir()
    (bundle / "study.toml").write_text(STUDY.format(trials=args.trials, seed=args.seed,
                                                    steps=args.steps, scheduler=args.scheduler))
    (bundle / "train.py").write_text(TRAIN.format(delay=args.delay))
    state_dir = root / "cluster"
    ack_logs = [state_dir / f"ack-{i}.jsonl" for i in range(args.agents)]
    cluster = LocalCluster(0, state_dir=state_dir, lease_seconds=args.lease,
                           agent_args=["--max-backoff", "1", "--stop-grace", "1"])
    kills: Counter[str] = Counter()
    log: list[str] = []

    def agent(i: int):  # type: ignore[no-untyped-def]
        cluster.agent_args = ["--max-backoff", "1", "--stop-grace", "1",
                              "--ack-log", str(ack_logs[i])]
        return cluster.start_agent(i)

    def say(text: str) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {text}"
        log.append(line)
        if not args.json:
            print(line, flush=True)

    started = time.monotonic()
    cluster.start()
    try:
        cluster.agents = [agent(i) for i in range(args.agents)]
        cluster.wait_for_nodes(args.agents)
        identity, _ = researcher_identity()
        with Client(cluster.address, identity, cluster.security) as client:
            study_id = client.submit_file(bundle / "study.toml")
        say(f"study {study_id}: {args.trials} trials x {args.steps} steps on {args.agents} agents")
        address = cluster.address
        deadline = time.monotonic() + args.timeout
        done_kills = 0
        while time.monotonic() < deadline:
            (state,), = _query(cluster.db_path, "SELECT state FROM studies WHERE id = ?",
                               (study_id,))
            if state != "running":
                break
            time.sleep(rng.uniform(0.5, 2.0))
            if done_kills >= args.kills:
                continue
            action = rng.choice(["agent", "child", "coordinator"])
            done_kills += 1
            if action == "coordinator" and cluster.coordinator is not None:
                os.killpg(cluster.coordinator.pid, signal.SIGKILL)
                cluster.coordinator.wait()
                say("killed the coordinator (SIGKILL); restarting it on the same database")
                time.sleep(rng.uniform(0.2, 1.5))
                cluster.start_coordinator(listen=address)
            elif action == "agent":
                i = rng.randrange(args.agents)
                os.killpg(cluster.agents[i].pid, signal.SIGKILL)
                cluster.agents[i].wait()
                say(f"killed agent {i} (SIGKILL); restarting it with the same home")
                time.sleep(rng.uniform(0.2, 1.0))
                cluster.agents[i] = agent(i)
            else:
                i = rng.randrange(args.agents)
                pids = _children(state_dir / f"agent-{i}")
                if not pids:
                    done_kills -= 1
                    continue
                os.kill(pids[0], signal.SIGKILL)
                say(f"killed a training child of agent {i} (SIGKILL)")
            kills[action] += 1
        else:
            say("timed out waiting for the study")
        (state,), = _query(cluster.db_path, "SELECT state FROM studies WHERE id = ?",
                           (study_id,))
        if state == "running":  # give the last retries time to finish
            end = time.monotonic() + args.timeout / 2
            while time.monotonic() < end and state == "running":
                time.sleep(0.5)
                (state,), = _query(cluster.db_path, "SELECT state FROM studies WHERE id = ?",
                                   (study_id,))
        result = check(cluster.db_path, study_id, args.steps, ack_logs)
    finally:
        cluster.close()
    result.update(kills=dict(kills), seconds=round(time.monotonic() - started, 1), log=log,
                  state_dir=str(state_dir))
    if not result["problems"] and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        result["state_dir"] = None
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per training step")
    parser.add_argument("--kills", type=int, default=8, help="how many SIGKILLs to send")
    parser.add_argument("--lease", type=float, default=3.0, help="lease seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scheduler", default="hyperband", help="fifo runs every trial fully")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database and logs (always kept when an invariant fails)")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"kills: {result['kills']}")
        print(f"trials: {result['trials']}  attempts: {result['attempts']}")
        print(f"reports stored: {result['reports']}  acknowledged reports checked: "
              f"{result['acknowledged_checked']}  missing: {result['acknowledged_missing']}  "
              f"duplicates: {result['duplicates']}  counted twice: {result['counted_twice']}")
        print("invariants: " + ("all hold" if not result["problems"] else
                                "VIOLATED: " + "; ".join(result["problems"])))
        if result["state_dir"]:
            print(f"database and logs: {result['state_dir']}")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
