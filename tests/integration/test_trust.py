"""Trust with real processes: TLS, admission, bans, provider trust policy, faked results."""

from __future__ import annotations

import os
import queue
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client, CoordinatorError
from tests.integration.helpers import cli, query
from tunefleet.envelope import seal
from tunefleet.keys import Identity, load
from tunefleet.tls import CA_FILE, ChannelSecurity, init_authority, open_channel
from tunefleet.v1 import common_pb2, node_pb2, node_pb2_grpc, operator_pb2, operator_pb2_grpc


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def admitted(tmp_path: Path) -> Iterator[tuple[LocalCluster, Identity]]:
    """A TLS coordinator that admits only the test's researcher key."""
    identity, _ = researcher_identity()
    cluster = LocalCluster(agents=0, state_dir=tmp_path / "cluster", researchers=[identity.key_id],
                           lease_seconds=2.0, agent_args=["--max-backoff", "0.5"])
    cluster.start()
    yield cluster, identity
    cluster.close()


def operator(cluster: LocalCluster) -> Identity:
    return load(cluster.tls_dir / "operator.key")


def test_init_writes_private_keys_with_mode_0600(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "coordinator", "init", "--dir",
                           str(tmp_path / "tls"), "--host", "tuner.example.org"],
                          capture_output=True, text=True, check=True)
    assert "operator key id" in proc.stdout
    for name in ("ca.key", "server.key", "operator.key"):
        assert stat.S_IMODE(os.stat(tmp_path / "tls" / name).st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "coordinator", "init", "--dir",
                            str(tmp_path / "tls")], capture_output=True, text=True)
    assert again.returncode == 1 and "exists already" in again.stderr


def test_serve_needs_certificates_or_an_explicit_insecure(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "coordinator", "serve", "--db",
                           str(tmp_path / "c.db"), "--tls-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "coordinator init" in proc.stderr
    assert not (tmp_path / "c.db").exists()


def test_tls_is_pinned_to_the_coordinators_ca(admitted: tuple[LocalCluster, Identity],
                                              tmp_path: Path) -> None:
    cluster, identity = admitted
    other_ca = tmp_path / "other"
    init_authority(other_ca)
    with Client(cluster.address, identity, ChannelSecurity(ca=other_ca / "ca.pem"),
                timeout=5) as client, pytest.raises(CoordinatorError) as info:
        client.studies()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    with Client(cluster.address, identity, ChannelSecurity(insecure=True), timeout=5) as client, \
            pytest.raises(CoordinatorError) as info:
        client.studies()
    assert info.value.code is grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port fails
    with Client(cluster.address, identity, cluster.security) as client:
        assert client.studies() == []
    # Without --ca or --insecure the CLI says what to do, in one line.
    proc = cli("studies", "--coordinator", cluster.address)
    assert proc.returncode == 2 and "--ca" in proc.stderr and len(proc.stderr.splitlines()) == 1
    # a CA of another coordinator: one line (gRPC's own log line of the failed handshake is
    # kept off stderr), saying what to change
    other = tmp_path / "other-tls"
    init_authority(other)
    proc = cli("studies", "--coordinator", cluster.address, "--ca", str(other / CA_FILE))
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "its TLS certificate is not one --ca trusts" in line


def test_only_admitted_researchers_submit(admitted: tuple[LocalCluster, Identity],
                                          tiny_train_dir: Path) -> None:
    cluster, identity = admitted
    stranger = Identity.generate()
    with Client(cluster.address, stranger, cluster.security) as client, \
            pytest.raises(CoordinatorError) as info:
        client.submit_file(tiny_train_dir / "study.toml")
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert f"coordinator admit {stranger.key_id}" in info.value.details
    assert query(cluster.db_path, "SELECT COUNT(*) FROM bundles")[0][0] == 0
    # The operator admits the key; now it may submit.
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "admit", stranger.key_id,
         *cluster.connection_args, "--operator-key", str(cluster.tls_dir / "operator.key")],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "admitted" in proc.stdout
    with Client(cluster.address, stranger, cluster.security) as client:
        assert client.submit_file(tiny_train_dir / "study.toml")
    # Only the operator key may change access.
    with open_channel(cluster.address, cluster.security) as channel:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ChangeAccess(seal(identity, operator_pb2.AccessRequest(
                key_id=identity.key_id, action="admit")))
        assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_banned_node_is_cut_off_and_its_work_goes_elsewhere(
        admitted: tuple[LocalCluster, Identity], tmp_path: Path) -> None:
    cluster, identity = admitted
    study = tmp_path / "s"
    study.mkdir()
    (study / "train.py").write_text(
        "import time\nfrom tunefleet import trial\n"
        "for s in range(1, 31):\n    time.sleep(0.1)\n    trial.report(s, loss=1.0 / s)\n"
        "    if trial.should_stop():\n        break\n")
    (study / "study.toml").write_text(
        'name = "ban"\n[objective]\nmetric = "loss"\n[budget]\nmax_trials = 3\n'
        '[search]\nsearcher = "random"\nscheduler = "fifo"\n[fidelity]\nmax = 30\n'
        '[space]\nx = { type = "float", low = 0.0, high = 1.0 }\n[verification]\nbest = false\n')
    cluster.agents = [cluster.start_agent(0)]
    cluster.wait_for_nodes(1)
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(study / "study.toml")
    wait_until(lambda: query(cluster.db_path, "SELECT COUNT(*) FROM attempts WHERE "
                             "state = 'running'")[0][0] == 1, 30, "a running attempt")
    (node_id,), = query(cluster.db_path, "SELECT id FROM nodes")
    with open_channel(cluster.address, cluster.security) as channel:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        reply = stub.ChangeAccess(seal(operator(cluster), operator_pb2.AccessRequest(
            key_id=node_id, action="ban", reason="faked results")))
    assert reply.entry.state == "banned" and reply.sessions_ended == 1
    # The agent is told, stops its child and exits with a one-line reason.
    assert cluster.agents[0].wait(timeout=30) == 1
    log = (cluster.state_dir / "agent-0.log").read_text()
    assert "PERMISSION_DENIED" in log and "banned" in log
    assert query(cluster.db_path, "SELECT COUNT(*) FROM attempts WHERE state = 'running'"
                 )[0][0] == 0
    # A healthy node finishes the study; the banned one never gets work again.
    cluster.agents.append(cluster.start_agent(1))
    wait_until(lambda: query(cluster.db_path, "SELECT state FROM studies WHERE id = ?",
                             (study_id,))[0][0] == "completed", 60, "the study to complete")
    assert query(cluster.db_path, "SELECT COUNT(*) FROM attempts WHERE node_id = ? AND "
                 "state = 'completed'", (node_id,))[0][0] == 0


def test_banned_researcher_loses_running_studies(admitted: tuple[LocalCluster, Identity],
                                                 tiny_train_dir: Path) -> None:
    cluster, identity = admitted
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "ban", identity.key_id, "--reason", "abuse",
         *cluster.connection_args, "--operator-key", str(cluster.tls_dir / "operator.key")],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "1 study(ies) stopped" in proc.stdout, proc
    operator = load(cluster.tls_dir / "operator.key")
    with Client(cluster.address, operator, cluster.security) as client:
        assert client.status(study_id).state == "stopped"
    with Client(cluster.address, identity, cluster.security) as client:
        with pytest.raises(CoordinatorError) as info:
            client.submit_file(tiny_train_dir / "study.toml")
        assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "abuse" in info.value.details
        with pytest.raises(CoordinatorError) as info:  # a banned key reads nothing either
            client.status(study_id)
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED and "abuse" in info.value.details
    # lifting the ban does not bring back the admission it replaced, and says so (before,
    # only "KEY: none", the same as an unban that changed nothing)
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "unban", identity.key_id,
         *cluster.connection_args, "--operator-key", str(cluster.tls_dir / "operator.key")],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc
    assert proc.stdout.strip() == (
        f"{identity.key_id}: none (no longer banned; a researcher key needs `coordinator "
        f"admit {identity.key_id}` again to submit, unless the coordinator admits everyone)")
    proc = subprocess.run(  # again: there is no ban to lift
        [sys.executable, "-m", "coordinator", "unban", identity.key_id,
         *cluster.connection_args, "--operator-key", str(cluster.tls_dir / "operator.key")],
        capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == f"{identity.key_id}: none (it was not banned: nothing changed)"
    proc = subprocess.run(
        [sys.executable, "-m", "coordinator", "access",
         *cluster.connection_args, "--operator-key", str(cluster.tls_dir / "operator.key")],
        capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "", "no key is admitted or banned\n")


def test_provider_trust_policy_declines_with_a_recorded_reason(
        admitted: tuple[LocalCluster, Identity], tiny_train_dir: Path) -> None:
    cluster, identity = admitted
    someone_else = Identity.generate().key_id
    trusting = cluster.start_agent(0)
    cluster.agent_args = ["--max-backoff", "0.5", "--trust", someone_else]
    cluster.agents = [trusting, cluster.start_agent(1)]
    cluster.wait_for_nodes(2)
    # Agent 1 trusts only someone else: it declines; agent 0 (trusting anyone admitted) runs all.
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
        wait_until(lambda: client.status(study_id).finished, 60, "the study to finish")
        trials = client.trials(study_id)
    assert {t.state for t in trials} == {"completed"}
    declined = query(cluster.db_path, "SELECT error FROM attempts WHERE error LIKE 'declined%'")
    nodes = {n for (n,) in query(cluster.db_path, "SELECT node_id FROM attempts WHERE "
                                 "state = 'completed'")}
    assert len(nodes) == 1
    assert declined and all("not in this node's trust policy" in e for (e,) in declined)


def test_bundle_download_needs_a_node_or_the_publisher(admitted: tuple[LocalCluster, Identity],
                                                       tiny_train_dir: Path) -> None:
    cluster, identity = admitted
    with Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
        digest = client.status(study_id)
    (bundle_digest,), = query(cluster.db_path, "SELECT bundle_digest FROM studies")
    with open_channel(cluster.address, cluster.security) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        for who, allowed in ((Identity.generate(), False), (identity, True)):
            request = seal(who, node_pb2.BundleRequest(digest=bundle_digest))
            if allowed:
                chunks = list(stub.DownloadBundle(request))
                assert chunks[0].header.digest == bundle_digest
            else:
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.DownloadBundle(request))
                assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert digest.study_id == study_id


def test_oversized_message_is_refused_with_a_clear_status(
        admitted: tuple[LocalCluster, Identity]) -> None:
    cluster, identity = admitted
    with open_channel(cluster.address, cluster.security) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        huge = seal(identity, node_pb2.RegisterRequest(name="x" * (5 * 1024 * 1024)))
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(huge)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with Client(cluster.address, identity, cluster.security) as client:
        assert client.studies() == []  # still serving


def test_faked_results_are_caught_by_a_rerun_and_flag_the_node(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    """A cheating node reports a far too good loss; an honest agent re-runs the best trial."""
    identity, _ = researcher_identity()
    (tiny_train_dir / "study.toml").write_text(
        (tiny_train_dir / "study.toml").read_text().replace("max_trials = 6", "max_trials = 1")
        + "[verification]\nbest = true\ntolerance = 0.05\n")
    with LocalCluster(agents=0, state_dir=tmp_path / "c", lease_seconds=5.0) as cluster:
        cheater = Identity.generate()
        inventory = node_pb2.Inventory(cpu_slots=1)
        with open_channel(cluster.address, cluster.security) as channel:
            stub = node_pb2_grpc.NodeServiceStub(channel)
            stub.Register(seal(cheater, node_pb2.RegisterRequest(name="cheat",
                                                                  inventory=inventory)))
            q: queue.Queue[common_pb2.SignedEnvelope | None] = queue.Queue()

            def event(**kind: object) -> common_pb2.SignedEnvelope:
                return seal(cheater, node_pb2.NodeEvent(node_id=cheater.key_id, **kind))  # type: ignore[arg-type]

            q.put(event(hello=node_pb2.Hello(inventory=inventory)))

            def requests() -> Iterator[common_pb2.SignedEnvelope]:
                while (item := q.get()) is not None:
                    yield item

            call = stub.Session(requests())
            with Client(cluster.address, identity, cluster.security) as client:
                study_id = client.submit_file(tiny_train_dir / "study.toml")
                # The honest agent joins only once the cheater holds the trial.
                for message in call:
                    if message.WhichOneof("kind") == "assignment":
                        a = message.assignment
                        break
                cluster.agents = [cluster.start_agent(0)]
                cluster.wait_for_nodes(2)
                time.sleep(1.0)
                for step in (1, 2, 3):
                    q.put(event(report=node_pb2.MetricReport(
                        attempt_id=a.attempt_id, seq=step, step=step, metrics={"loss": 1e-6})))
                q.put(event(finished=node_pb2.AttemptFinished(attempt_id=a.attempt_id,
                                                              outcome="completed")))
                wait_until(lambda: client.status(study_id).finished, 60, "the study to end")
                best = client.status(study_id).best
                q.put(None)
        assert best is not None and best.value == 1e-6
        assert best.verification == "disputed"
        assert "re-run on node" in best.verification_detail
        flagged = query(cluster.db_path, "SELECT id, reputation, flagged FROM nodes WHERE "
                        "flagged = 1")
        assert [(n, r) for n, r, _ in flagged] == [(cheater.key_id, 0.5)]
        shown = cli("best", study_id, *cluster.connection_args, check=True).stdout
        assert "DISPUTED" in shown


def test_an_owner_reads_its_study_after_a_restart_that_closes_admission(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    owner, stranger = Identity.generate(), Identity.generate()
    with LocalCluster(agents=0, state_dir=tmp_path / "state") as cluster:  # --open
        with Client(cluster.address, owner, cluster.security) as client:
            study_id = client.submit_file(tiny_train_dir / "study.toml")
        assert cluster.coordinator is not None
        cluster.coordinator.terminate()
        cluster.coordinator.wait(timeout=30)
        cluster.researchers = [stranger.key_id]  # restart: only the stranger is admitted
        cluster.start_coordinator()
        with Client(cluster.address, owner, cluster.security) as client:
            assert client.status(study_id).study_id == study_id
            assert [s.study_id for s in client.studies()] == [study_id]
            with pytest.raises(CoordinatorError) as info:
                client.submit_file(tiny_train_dir / "study.toml")  # submitting needs admission
            assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
        with Client(cluster.address, stranger, cluster.security) as other:
            with pytest.raises(CoordinatorError) as info:
                other.status(study_id)  # admitted, but not the owner
            assert info.value.code is grpc.StatusCode.NOT_FOUND  # as if it did not exist
            assert other.studies() == []
