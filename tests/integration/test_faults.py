"""Faults with real processes: killed coordinators, agents and children, dropped networks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client
from tests.integration.helpers import cli, query
from tests.integration.proxy import CuttableProxy

LEASE = 2.0


def slow_study(root: Path, trials: int, steps: int, delay: float) -> Path:
    """A torch-free study whose trials report ``steps`` steps, ``delay`` seconds apart."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(
        "import time\nfrom tunefleet import trial\n"
        f"for step in range(1, {steps} + 1):\n"
        f"    time.sleep({delay})\n"
        "    trial.report(step, loss=trial.params['x'] + 1.0 / step)\n"
        "    if trial.should_stop():\n"
        "        break\n"
    )
    (root / "study.toml").write_text(
        'name = "slow"\n[objective]\nmetric = "loss"\n'
        f"[budget]\nmax_trials = {trials}\n"
        '[search]\nsearcher = "random"\nscheduler = "fifo"\nseed = 3\n'
        f"[fidelity]\nmax = {steps}\n"
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n'
        "[verification]\nbest = false\n"
    )
    return root / "study.toml"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(agents=0, state_dir=tmp_path / "cluster", lease_seconds=LEASE,
                     agent_args=["--max-backoff", "1", "--stop-grace", "1"])
    c.start()
    yield c
    c.close()


def submit(cluster: LocalCluster, study: Path, address: str | None = None) -> str:
    identity, _ = researcher_identity()
    with Client(address or cluster.address, identity, cluster.security) as client:
        return client.submit_file(study)


def state(cluster: LocalCluster, study_id: str) -> str:
    return query(cluster.db_path, "SELECT state FROM studies WHERE id = ?", (study_id,))[0][0]


def running_attempts(cluster: LocalCluster) -> list[tuple[int, str]]:
    return query(cluster.db_path, "SELECT id, node_id FROM attempts WHERE state = 'running'")


def check_invariants(cluster: LocalCluster, study_id: str, steps: int) -> None:
    """Every trial in one final state; completed trials have every step once, from one attempt."""
    db = cluster.db_path
    assert state(cluster, study_id) == "completed"
    trials = query(db, "SELECT number, state FROM trials WHERE study_id = ?", (study_id,))
    assert trials and {s for _, s in trials} <= {"completed", "pruned", "failed"}
    for number, trial_state in trials:
        if trial_state != "completed":
            continue
        (final,), = query(db, "SELECT id FROM attempts WHERE study_id = ? AND trial_number = ? "
                              "AND state = 'completed' AND purpose = 'trial'", (study_id, number))
        got = [s for (s,) in query(db, "SELECT step FROM reports WHERE attempt_id = ? "
                                       "ORDER BY seq", (final,))]
        assert got == list(range(1, steps + 1))
    assert query(db, "SELECT COUNT(*) FROM attempts WHERE state = 'running'")[0][0] == 0


def child_pids(cluster: LocalCluster, index: int) -> list[int]:
    home = cluster.state_dir / f"agent-{index}"
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(home / "work")):
            pids.append(int(pid))
    return pids


@pytest.mark.slow
def test_kill_9_coordinator_resumes_and_loses_nothing(cluster: LocalCluster, tmp_path: Path
                                                      ) -> None:
    study = slow_study(tmp_path / "s", trials=6, steps=6, delay=0.25)
    cluster.agents = [cluster.start_agent(i) for i in range(2)]
    cluster.wait_for_nodes(2)
    study_id = submit(cluster, study)
    address = cluster.address
    for _ in range(2):
        wait_until(lambda: query(cluster.db_path, "SELECT COUNT(*) FROM reports")[0][0] >= 3,
                   30, "reports")
        assert cluster.coordinator is not None
        os.killpg(cluster.coordinator.pid, signal.SIGKILL)
        cluster.coordinator.wait()
        time.sleep(1.0)  # agents notice and back off; their children keep training
        cluster.start_coordinator(listen=address)
        time.sleep(1.0)
    wait_until(lambda: state(cluster, study_id) == "completed", 90, "study to complete")
    check_invariants(cluster, study_id, steps=6)
    # Nothing was retried needlessly: the agents came back within the restart grace.
    lost = query(cluster.db_path, "SELECT COUNT(*) FROM attempts WHERE state = 'lost'")[0][0]
    assert lost == 0


@pytest.mark.slow
def test_kill_9_agent_loses_its_attempt_and_the_trial_is_retried(cluster: LocalCluster,
                                                                 tmp_path: Path) -> None:
    study = slow_study(tmp_path / "s", trials=3, steps=8, delay=0.25)
    cluster.agents = [cluster.start_agent(0)]
    cluster.wait_for_nodes(1)
    study_id = submit(cluster, study)
    wait_until(lambda: query(cluster.db_path, "SELECT COUNT(*) FROM reports")[0][0] >= 2,
               30, "reports")
    [(attempt_id, _)] = running_attempts(cluster)
    params = query(cluster.db_path, "SELECT t.params FROM trials t JOIN attempts a ON "
                   "a.study_id = t.study_id AND a.trial_number = t.number WHERE a.id = ?",
                   (attempt_id,))[0][0]
    os.killpg(cluster.agents[0].pid, signal.SIGKILL)
    cluster.agents[0].wait()
    cluster.agents.append(cluster.start_agent(1))
    wait_until(lambda: query(cluster.db_path, "SELECT state FROM attempts WHERE id = ?",
                             (attempt_id,))[0][0] == "lost", 15, "the lease to expire")
    wait_until(lambda: state(cluster, study_id) == "completed", 60, "study to complete")
    check_invariants(cluster, study_id, steps=8)
    retried = query(cluster.db_path, "SELECT a.id, t.params FROM attempts a JOIN trials t ON "
                    "a.study_id = t.study_id AND a.trial_number = t.number WHERE a.id > ? AND "
                    "t.number = (SELECT trial_number FROM attempts WHERE id = ?)",
                    (attempt_id, attempt_id))
    assert retried and all(p == params for _, p in retried)  # same configuration
    # The lost attempt's late reports were refused: it has no report after it was lost.
    lost_at = query(cluster.db_path, "SELECT ended_at FROM attempts WHERE id = ?",
                    (attempt_id,))[0][0]
    assert query(cluster.db_path, "SELECT COUNT(*) FROM reports WHERE attempt_id = ? AND "
                 "received_at > ?", (attempt_id, lost_at))[0][0] == 0


@pytest.mark.slow
def test_kill_9_child_fails_the_attempt_with_its_stderr_and_retries(cluster: LocalCluster,
                                                                    tmp_path: Path) -> None:
    study = slow_study(tmp_path / "s", trials=2, steps=8, delay=0.25)
    cluster.agents = [cluster.start_agent(0)]
    cluster.wait_for_nodes(1)
    study_id = submit(cluster, study)
    wait_until(lambda: child_pids(cluster, 0), 30, "a training child")
    wait_until(lambda: query(cluster.db_path, "SELECT COUNT(*) FROM reports")[0][0] >= 1,
               30, "a report")
    [victim] = child_pids(cluster, 0)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: state(cluster, study_id) == "completed", 60, "study to complete")
    check_invariants(cluster, study_id, steps=8)
    failed = query(cluster.db_path, "SELECT exit_code, error FROM attempts WHERE state = 'failed'")
    assert len(failed) == 1 and failed[0][0] == -9
    assert "exit code -9 (killed by SIGKILL" in failed[0][1]
    shown = cli("trials", study_id, "--format", "json", *cluster.connection_args,
                check=True)
    assert all(t["state"] == "completed" for t in json.loads(shown.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("cut_seconds, expect_lost", [(0.8, False), (5.0, True)])
def test_dropped_network(cluster: LocalCluster, tmp_path: Path, cut_seconds: float,
                         expect_lost: bool) -> None:
    proxy = CuttableProxy(cluster.address)
    try:
        home = cluster.state_dir / "agent-net"
        agent = subprocess.Popen(
            [sys.executable, "-m", "node_agent", "start", "--coordinator", proxy.address,
             "--ca", str(cluster.security.ca),
             "--home", str(home), "--slots", "1", "--max-backoff", "0.5", "--stop-grace", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        cluster.agents.append(agent)
        cluster.wait_for_nodes(1)
        study_id = submit(cluster, slow_study(tmp_path / "s", trials=2, steps=12, delay=0.25))
        wait_until(lambda: query(cluster.db_path, "SELECT COUNT(*) FROM reports")[0][0] >= 2,
                   30, "reports")
        [(first, _)] = running_attempts(cluster)
        proxy.cut()
        time.sleep(cut_seconds)
        proxy.restore()
        wait_until(lambda: state(cluster, study_id) == "completed", 60, "study to complete")
        check_invariants(cluster, study_id, steps=12)
        first_state = query(cluster.db_path, "SELECT state FROM attempts WHERE id = ?",
                            (first,))[0][0]
        if expect_lost:
            # Refused after the lease ran out; the agent stopped that child and took new work.
            assert first_state == "lost"
            assert query(cluster.db_path, "SELECT COUNT(*) FROM attempts WHERE node_id = "
                         "(SELECT node_id FROM attempts WHERE id = ?) AND id > ?",
                         (first, first))[0][0] >= 1
        else:
            assert first_state == "completed"
            assert query(cluster.db_path, "SELECT COUNT(*) FROM attempts")[0][0] == 2
        assert agent.poll() is None  # the same agent process went on
    finally:
        proxy.close()


@pytest.mark.slow
def test_drain_finishes_running_trials_then_exits(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.agents = [cluster.start_agent(0)]
    cluster.wait_for_nodes(1)
    study_id = submit(cluster, slow_study(tmp_path / "s", trials=5, steps=6, delay=0.25))
    wait_until(lambda: running_attempts(cluster), 30, "a running attempt")
    [(attempt_id, _)] = running_attempts(cluster)
    home = cluster.state_dir / "agent-0"
    proc = subprocess.run([sys.executable, "-m", "node_agent", "drain", "--home", str(home)],
                          capture_output=True, text=True, check=True)
    assert "draining" in proc.stdout
    assert cluster.agents[0].wait(timeout=30) == 0
    assert query(cluster.db_path, "SELECT state FROM attempts WHERE id = ?",
                 (attempt_id,))[0][0] == "completed"
    assert query(cluster.db_path, "SELECT COUNT(*) FROM attempts")[0][0] == 1
    assert state(cluster, study_id) == "running"


@pytest.mark.slow
def test_stop_ends_running_trials_within_seconds(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.agents = [cluster.start_agent(i) for i in range(2)]
    cluster.wait_for_nodes(2)
    study_id = submit(cluster, slow_study(tmp_path / "s", trials=10, steps=200, delay=0.1))
    wait_until(lambda: len(running_attempts(cluster)) == 2, 30, "two running attempts")
    started = time.monotonic()
    proc = cli("stop", study_id, *cluster.connection_args, check=True)
    assert "stopped" in proc.stdout
    wait_until(lambda: not running_attempts(cluster), 10, "running attempts to end")
    assert time.monotonic() - started < 10
    wait_until(lambda: not child_pids(cluster, 0) and not child_pids(cluster, 1), 10,
               "children to exit")
    assert state(cluster, study_id) == "stopped"
    assert {s for (s,) in query(cluster.db_path, "SELECT state FROM trials")} == {"pruned"}
