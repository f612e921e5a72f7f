"""The fuzz run (scripts/fuzz_coordinator.py) as a real process, and the defects it found.

Each defect the fuzzer found has its own regression test below, with a real coordinator. A new
defect can be left out of the run with ``--exclude FAMILY`` (listed in ``KNOWN_DEFECTS``) while
its regression test is marked as an expected failure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.local import LocalCluster
from client.sdk import Client, CoordinatorError, build_bundle
from tests.integration.helpers import query
from tunefleet import serde
from tunefleet.envelope import seal
from tunefleet.keys import Identity
from tunefleet.study import StudySpec
from tunefleet.v1 import node_pb2, node_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
KNOWN_DEFECTS: list[str] = []
ALLOWED = {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
           "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "OUT_OF_RANGE"}
MARKER = 2**62  # a nonexistent attempt: the stop order answering it closes a session


def test_fuzz_run_keeps_serving_and_consistent() -> None:
    excludes = [a for family in KNOWN_DEFECTS for a in ("--exclude", family)]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz_coordinator.py"), "--messages", "1200",
         "--seed", "7", "--json", *excludes],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["problems"] == [], result["problems"]
    assert proc.returncode == 0
    assert result["messages"] == 1200 == sum(result["by_endpoint"].values())
    assert len(result["by_endpoint"]) == 12
    assert min(result["by_endpoint"].values()) >= 30, result["by_endpoint"]
    assert set(result["by_generator"]) == {"hypothesis", "mutation", "random"}
    assert not {"UNKNOWN", "INTERNAL"} & set(result["by_code"])
    assert set(result["by_code"]) <= ALLOWED, result["by_code"]
    assert {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
            "RESOURCE_EXHAUSTED"} <= set(result["by_code"])
    assert result["forged_sent"] >= 100
    assert all(v["ok"] for v in result["invariants"].values())
    assert result["stored"]["reports"] > 0 and result["stored"]["attempts"] > 0
    assert time.monotonic() - started < 120


# ---- the defects, one strict xfail each ---------------------------------------------------

METHODS = {
    "UploadBundle": ("/tunefleet.v1.ResearcherService/UploadBundle", "stream_unary"),
    "SubmitStudy": ("/tunefleet.v1.ResearcherService/SubmitStudy", "unary_unary"),
    "GetStudy": ("/tunefleet.v1.ResearcherService/GetStudy", "unary_unary"),
    "ListStudies": ("/tunefleet.v1.ResearcherService/ListStudies", "unary_unary"),
    "ListTrials": ("/tunefleet.v1.ResearcherService/ListTrials", "unary_unary"),
    "StopStudy": ("/tunefleet.v1.ResearcherService/StopStudy", "unary_unary"),
    "WatchStudy": ("/tunefleet.v1.ResearcherService/WatchStudy", "unary_stream"),
    "Register": ("/tunefleet.v1.NodeService/Register", "unary_unary"),
    "Session": ("/tunefleet.v1.NodeService/Session", "stream_stream"),
    "DownloadBundle": ("/tunefleet.v1.NodeService/DownloadBundle", "unary_stream"),
    "ChangeAccess": ("/tunefleet.v1.OperatorService/ChangeAccess", "unary_unary"),
    "ListAccess": ("/tunefleet.v1.OperatorService/ListAccess", "unary_unary"),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(agents=0, state_dir=tmp_path_factory.mktemp("fuzz-defects")) as c:
        yield c


@pytest.fixture
def researcher() -> Identity:
    return Identity.generate()


@pytest.fixture
def cluster(tmp_path: Path, researcher: Identity) -> Iterator[LocalCluster]:
    with LocalCluster(agents=0, state_dir=tmp_path / "cluster",
                      researchers=[researcher.key_id]) as c:
        yield c


def _spec(**overrides: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": "defect", "objective": {"metric": "loss"}, "budget": {"max_trials": 20},
        "search": {"searcher": "random", "scheduler": "fifo", "seed": 3},
        "fidelity": {"min": 1, "max": 3}, "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    }
    data.update(overrides)
    return StudySpec.from_mapping(data)


def _submit(cluster: LocalCluster, researcher: Identity, train_dir: Path, spec: StudySpec,
            timeout: float = 30.0, choices: list[str] | None = None) -> str:
    """Upload the bundle and submit ``spec``; ``choices`` replace its first parameter by a
    categorical one on the wire (the client's own check of them is quadratic too)."""
    with Client(cluster.address, researcher, cluster.security, timeout=timeout) as client:
        bundle = build_bundle(spec, train_dir, researcher)
        client.upload(bundle)
        message = serde.spec_to_proto(spec, bundle.digest)
        if choices is not None:
            param = message.space[0]
            param.type = "categorical"
            param.ClearField("low")
            param.ClearField("high")
            for choice in choices:
                param.choices.add(string_value=choice)
        return client.submit_spec(message).study_id


def _node(cluster: LocalCluster, slots: int) -> Identity:
    node = Identity.generate()
    with grpc.secure_channel(cluster.address, cluster.security.credentials()) as channel:  # type: ignore[arg-type]
        node_pb2_grpc.NodeServiceStub(channel).Register(seal(node, node_pb2.RegisterRequest(
            name="n", inventory=node_pb2.Inventory(cpu_slots=slots))), timeout=10)
    return node


def _session(cluster: LocalCluster, node: Identity, events: list[node_pb2.NodeEvent]
             ) -> tuple[grpc.StatusCode, list[node_pb2.CoordinatorMessage]]:
    """Send a hello and events, then keep the stream open until all are handled (a closing
    report for a nonexistent attempt is answered last), as an agent does."""
    wires = [seal(node, e) for e in events]
    wires.append(seal(node, node_pb2.NodeEvent(node_id=node.key_id, report=node_pb2.MetricReport(
        attempt_id=MARKER, seq=1, step=1))))
    done = threading.Event()

    def requests() -> Iterator[Any]:
        yield from wires
        done.wait(10)

    replies: list[node_pb2.CoordinatorMessage] = []
    with grpc.secure_channel(cluster.address, cluster.security.credentials()) as channel:  # type: ignore[arg-type]
        try:
            for message in node_pb2_grpc.NodeServiceStub(channel).Session(requests(), timeout=30):
                if message.stop.attempt_id == MARKER:
                    done.set()
                else:
                    replies.append(message)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
        finally:
            done.set()
    return code, replies


def _hello(node: Identity, slots: int, running: list[int] | None = None) -> node_pb2.NodeEvent:
    return node_pb2.NodeEvent(node_id=node.key_id, hello=node_pb2.Hello(
        inventory=node_pb2.Inventory(cpu_slots=slots), running_attempts=running or []))


def _report(node: Identity, attempt: int, step: int, loss: float) -> node_pb2.NodeEvent:
    return node_pb2.NodeEvent(node_id=node.key_id, report=node_pb2.MetricReport(
        attempt_id=attempt, seq=1, step=step, metrics={"loss": loss}))


@pytest.mark.parametrize("endpoint", sorted(METHODS))
def test_undecodable_request_is_invalid_argument(shared: LocalCluster, endpoint: str) -> None:
    path, kind = METHODS[endpoint]
    garbage = b"\xff\xff\xff"  # wire type 7 does not exist: no message parses from this
    with grpc.secure_channel(shared.address, shared.security.credentials()) as channel:  # type: ignore[arg-type]
        call = getattr(channel, kind)(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            if kind == "unary_unary":
                call(garbage, timeout=10)
            elif kind == "unary_stream":
                list(call(garbage, timeout=10))
            elif kind == "stream_unary":
                call(iter([garbage]), timeout=10)
            else:
                list(call(iter([garbage]), timeout=10))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()  # type: ignore[attr-defined]


def test_envelope_signed_at_nan_time_is_refused(shared: LocalCluster) -> None:
    envelope = seal(Identity.generate(), node_pb2.RegisterRequest(name="nan"), when=math.nan)
    with grpc.secure_channel(shared.address, shared.security.credentials()) as channel, \
            pytest.raises(grpc.RpcError) as info:  # type: ignore[arg-type]
        node_pb2_grpc.NodeServiceStub(channel).Register(envelope, timeout=10)
    assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED,  # type: ignore[attr-defined]
                                 grpc.StatusCode.INVALID_ARGUMENT)


def test_median_report_below_a_peers_first_step_is_answered(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    _submit(cluster, researcher, tiny_train_dir, _spec(
        search={"searcher": "random", "scheduler": "median"}, fidelity={"min": 1, "max": 10}))
    node = _node(cluster, 2)
    # Attempts 1 and 2 (trials 0 and 1): trial 0 reports every 4 steps, trial 1 every 2.
    code, replies = _session(cluster, node, [_hello(node, 2), _report(node, 1, 4, 0.5),
                                             _report(node, 2, 2, 0.7)])
    assert code is grpc.StatusCode.OK
    assert sorted(m.report_ack.attempt_id for m in replies if m.HasField("report_ack")) == [1, 2]


def test_negative_step_reports_do_not_break_a_gp_study(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    _submit(cluster, researcher, tiny_train_dir, _spec(search={"searcher": "gp", "seed": 3}))
    node = _node(cluster, 9)
    # Attempts 1..9 run trials 0..8 (the GP's 8 start-up points and one more); 1..8 report at
    # step -1, then 9 ends without a report and the GP is asked for trial 9.
    events = [_hello(node, 9), *(_report(node, a, -1, 0.1 * a) for a in range(1, 9)),
              node_pb2.NodeEvent(node_id=node.key_id, finished=node_pb2.AttemptFinished(
                  attempt_id=9, outcome="completed"))]
    code, _ = _session(cluster, node, events)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), code
    log = (cluster.state_dir / "coordinator.log").read_text()
    assert "Traceback" not in log


def test_declined_after_stop_leaves_no_pending_trial(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    study_id = _submit(cluster, researcher, tiny_train_dir, _spec())
    node = _node(cluster, 1)
    code, replies = _session(cluster, node, [_hello(node, 1)])
    assert code is grpc.StatusCode.OK
    (attempt,) = [m.assignment.attempt_id for m in replies if m.HasField("assignment")]
    with Client(cluster.address, researcher, cluster.security) as client:
        assert client.stop(study_id).state == "stopped"
    declined = node_pb2.NodeEvent(node_id=node.key_id, declined=node_pb2.AttemptDeclined(
        attempt_id=attempt, reason="untrusted publisher"))
    code, _ = _session(cluster, node, [_hello(node, 1, [attempt]), declined])
    assert code is grpc.StatusCode.OK
    states = query(cluster.db_path, "SELECT state FROM trials WHERE study_id = ?", (study_id,))
    assert ("pending",) not in states, states


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_grid_study_over_the_trial_limit_is_refused_or_cheap(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    # 9 float parameters: 5**9 = 1,953,125 grid points, more than MAX_TRIALS_LIMIT (10**6).
    # (More parameters would exhaust this machine's memory while the defect stands.)
    space = {f"p{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(9)}
    spec = _spec(search={"searcher": "grid", "scheduler": "fifo"}, space=space, budget={})
    assert cluster.coordinator is not None
    before = _rss_mib(cluster.coordinator.pid)
    started = time.monotonic()
    try:
        _submit(cluster, researcher, tiny_train_dir, spec)
    except CoordinatorError as exc:
        assert exc.code is grpc.StatusCode.INVALID_ARGUMENT, exc
        return
    elapsed, grown = time.monotonic() - started, _rss_mib(cluster.coordinator.pid) - before
    assert elapsed < 2.0 and grown < 200, f"accepted after {elapsed:.1f}s, +{grown:.0f} MiB"


def test_many_categorical_choices_are_answered_promptly(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    choices = [f"c{i}" for i in range(25_000)]
    try:
        _submit(cluster, researcher, tiny_train_dir, _spec(), timeout=1.5, choices=choices)
    except CoordinatorError as exc:
        assert exc.code is grpc.StatusCode.INVALID_ARGUMENT, exc


def test_list_studies_answers_whatever_was_submitted(
        cluster: LocalCluster, researcher: Identity, tiny_train_dir: Path) -> None:
    # Two valid studies of about 2.2 MB each (long categorical choices) together pass 4 MiB.
    choices = [f"{i:05d}" + "x" * 2000 for i in range(1100)]
    with Client(cluster.address, researcher, cluster.security) as client:
        before = len(client.studies())
    accepted = 0
    for _ in range(2):
        try:
            _submit(cluster, researcher, tiny_train_dir, _spec(), choices=choices)
            accepted += 1
        except CoordinatorError as exc:  # a limit on the spec's size would do as well
            assert exc.code is grpc.StatusCode.INVALID_ARGUMENT, exc
            assert "at most" in exc.details
    with Client(cluster.address, researcher, cluster.security) as client:
        assert len(client.studies()) == before + accepted
