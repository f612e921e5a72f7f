"""Unit tests of the hub with a real SQLite store and an injected clock (no gRPC)."""

from __future__ import annotations

import hashlib
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coordinator.hub import Hub, PermissionDeniedError
from coordinator.migrations import MIGRATIONS
from coordinator.models import AttemptState, StudyState, TrialState
from coordinator.scheduling import DEFAULTS_VERSION, build_tuner
from coordinator.store import Store
from tunefleet import serde
from tunefleet.errors import InvalidInputError, NotFoundError, StateError
from tunefleet.study import StudySpec
from tunefleet.v1 import node_pb2

DIGEST = "ab" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_spec(**changes: Any) -> StudySpec:
    data: dict[str, Any] = {
        "name": "t",
        "objective": {"metric": "loss", "mode": "min"},
        "budget": {"max_trials": 3},
        "search": {"searcher": "random", "scheduler": "fifo", "seed": 7},
        "fidelity": {"min": 1, "max": 3},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "resources": {"gpus": 0},
    }
    for key, value in changes.items():
        data[key] = value
    return StudySpec.from_mapping(data)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


@pytest.fixture
def hub(store: Store, clock: Clock) -> Hub:
    h = Hub(store, clock=clock, lease_seconds=10.0, max_attempts=2)
    h.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    return h


def submit(hub: Hub, spec: StudySpec, owner: str = "owner") -> str:
    """Submit ``spec`` as ``owner``, with a bundle ``owner`` published (DIGEST for "owner")."""
    digest = DIGEST if owner == "owner" else hashlib.sha256(owner.encode()).hexdigest()
    hub.put_bundle(digest, b"bundle", b"k" * 32, owner, b"s" * 64)  # a no-op the second time
    message = serde.spec_to_proto(spec, digest)
    return hub.submit_study(spec, digest, message.SerializeToString(), owner)


def connect(hub: Hub, node_id: str, cpu_slots: int = 1, gpus: list[tuple[str, float]] = ()
            ) -> list[node_pb2.Assignment]:
    inventory = node_pb2.Inventory(cpu_slots=cpu_slots)
    for uuid, mem in gpus:
        inventory.gpus.add(uuid=uuid, memory_total_gb=mem)
    hub.register_node(node_id, b"p" * 32, node_id, inventory)
    out = hub.node_connected(node_id, node_pb2.Hello(inventory=inventory))
    return [m.assignment for _, m in out if m.WhichOneof("kind") == "assignment"]


def assignments(outbox: list[tuple[str, node_pb2.CoordinatorMessage]]) -> list[node_pb2.Assignment]:
    return [m.assignment for _, m in outbox if m.WhichOneof("kind") == "assignment"]


def report(hub: Hub, node: str, attempt: int, seq: int, step: int, loss: float) -> str:
    out = hub.report(node, node_pb2.MetricReport(attempt_id=attempt, seq=seq, step=step,
                                                 metrics={"loss": loss}), b"env")
    (_, message), = out
    kind = message.WhichOneof("kind")
    return message.report_ack.decision if kind == "report_ack" else f"stop:{message.stop.reason}"


def finish(hub: Hub, node: str, attempt: int, outcome: str = "completed", error: str = "",
           ) -> list[node_pb2.Assignment]:
    out = hub.finished(node, node_pb2.AttemptFinished(attempt_id=attempt, outcome=outcome,
                                                      error=error))
    return assignments(out)


def test_study_runs_to_completion_and_best_is_minimum(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec())
    [a] = connect(hub, "n1")
    values = {}
    while True:
        loss = 1.0 + a.trial_id
        for step in (1, 2, 3):
            assert report(hub, "n1", a.attempt_id, step, step, loss / step) == "continue"
        values[a.trial_id] = loss / 3
        nxt = finish(hub, "n1", a.attempt_id)
        if not nxt:
            break
        [a] = nxt
    view = hub.study_view(study)
    assert view.study.state is StudyState.COMPLETED
    assert view.counts[TrialState.COMPLETED] == 3
    assert view.best is not None and view.best.value == min(values.values())
    assert len(store.reports_of_study(study)) == 9


def test_max_mode_picks_the_largest(hub: Hub) -> None:
    study = submit(hub, make_spec(objective={"metric": "loss", "mode": "max"},
                                  budget={"max_trials": 2}))
    [a] = connect(hub, "n1", cpu_slots=2)[:1]
    b = hub.assign("n1")
    assert b == []  # both slots were filled at connect
    trial_ids = [t.number for t in hub.store.list_trials(study)]
    assert trial_ids == [0, 1]
    for attempt_id, loss in ((1, 0.2), (2, 0.9)):
        report(hub, "n1", attempt_id, 1, 1, loss)
        finish(hub, "n1", attempt_id)
    assert hub.study_view(study).best.value == 0.9


def test_gpu_trials_go_only_to_gpus_with_enough_memory(hub: Hub) -> None:
    submit(hub, make_spec(resources={"gpus": 1, "min_gpu_memory_gb": 8}))
    assert connect(hub, "cpu-only", cpu_slots=4) == []
    assert connect(hub, "small-gpu", cpu_slots=0, gpus=[("GPU-small", 4.0)]) == []
    got = connect(hub, "big-gpu", cpu_slots=0, gpus=[("GPU-a", 16.0), ("GPU-b", 4.0),
                                                      ("GPU-c", 24.0)])
    assert sorted(list(a.gpu_uuids) for a in got) == [["GPU-a"], ["GPU-c"]]


def test_cpu_trials_use_cpu_slots_not_gpus(hub: Hub) -> None:
    submit(hub, make_spec())
    got = connect(hub, "gpu-node", cpu_slots=0, gpus=[("GPU-a", 16.0)])
    assert got == []
    got = connect(hub, "mixed", cpu_slots=1, gpus=[("GPU-b", 16.0)])
    assert len(got) == 1 and list(got[0].gpu_uuids) == []


def test_duplicate_report_counts_once_and_gets_the_same_answer(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec())
    [a] = connect(hub, "n1")
    assert report(hub, "n1", a.attempt_id, 1, 1, 0.5) == "continue"
    assert report(hub, "n1", a.attempt_id, 1, 1, 0.5) == "continue"
    assert len(store.reports_of_study(study)) == 1
    assert len([e for e in store.events(study) if e[0] == "report"]) == 1


def test_report_for_another_nodes_attempt_is_refused(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec())
    [a] = connect(hub, "n1")
    connect(hub, "n2")
    answer = report(hub, "n2", a.attempt_id, 1, 1, 0.5)
    assert answer.startswith("stop:")
    assert store.reports_of_study(study) == []
    assert hub.refused_reports == 1


def test_expired_lease_requeues_same_configuration_then_fails(hub: Hub, clock: Clock,
                                                               store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    params = dict(a.params)
    hub.node_disconnected("n1")
    clock.now += 11
    hub.expire_leases()
    assert store.get_attempt(a.attempt_id).state is AttemptState.LOST
    assert store.get_trial(study, 0).state is TrialState.PENDING
    # A late report of the lost attempt is refused and counted.
    assert report(hub, "n1", a.attempt_id, 1, 1, 0.1).startswith("stop:")
    assert store.get_attempt(a.attempt_id).late_reports == 1
    assert store.reports_of_study(study) == []
    [b] = connect(hub, "n2")
    assert b.trial_id == a.trial_id and dict(b.params) == params and b.attempt_id != a.attempt_id
    hub.node_disconnected("n2")
    clock.now += 11
    hub.expire_leases()
    trial = store.get_trial(study, 0)
    assert trial.state is TrialState.FAILED and "lease expired" in (trial.error or "")
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_heartbeat_keeps_the_lease(hub: Hub, clock: Clock, store: Store) -> None:
    submit(hub, make_spec())
    [a] = connect(hub, "n1")
    for _ in range(5):
        clock.now += 6
        hub.heartbeat("n1", node_pb2.Heartbeat(running_attempts=[a.attempt_id]))
        hub.expire_leases()
    assert store.get_attempt(a.attempt_id).state is AttemptState.RUNNING


def test_reconnect_without_the_attempt_loses_it_at_once(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    again = connect(hub, "n1")  # the agent restarted: it lists no running attempts
    assert store.get_attempt(a.attempt_id).state is AttemptState.LOST
    assert [x.trial_id for x in again] == [0]
    assert store.get_trial(study, 0).attempts == 2


def test_the_best_trial_names_its_node(hub: Hub, store: Store) -> None:
    # before, best --json and best.json showed an empty node_id for the best trial
    from coordinator.views import study_info_to_proto

    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 3, 0.5)
    finish(hub, "n1", a.attempt_id)
    assert study_info_to_proto(hub.study_view(study)).best.node_id == "n1"


def test_failed_child_is_retried_then_failed_with_its_error(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    [b] = finish(hub, "n1", a.attempt_id, "failed", "Traceback\nZeroDivisionError")
    assert b.trial_id == 0
    assert finish(hub, "n1", b.attempt_id, "failed", "Traceback\nZeroDivisionError") == []
    trial = store.get_trial(study, 0)
    assert trial.state is TrialState.FAILED and "ZeroDivisionError" in (trial.error or "")
    assert store.get_attempt(a.attempt_id).error.endswith("ZeroDivisionError")


CRASH = "exit code 1\nTraceback (most recent call last):\n  ...\nValueError: boom"


@pytest.fixture
def hub3(store: Store, clock: Clock) -> Hub:
    return Hub(store, clock=clock, lease_seconds=10.0, max_attempts=3)


def test_a_failed_trial_is_retried_on_another_node_and_ends_when_it_fails_the_same_way(
        hub3: Hub, store: Store) -> None:
    # before, the node that had just failed a trial took it back at once, and a trial whose
    # own code raised was run max_attempts times
    study = submit(hub3, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub3, "n1")
    assert connect(hub3, "n2") == []
    [b] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)
    assert (b.trial_id, store.get_attempt(b.attempt_id).node_id) == (0, "n2")
    assert finish(hub3, "n2", b.attempt_id, "failed", CRASH.replace("  ...", "  other")) == []
    trial = store.get_trial(study, 0)
    assert (trial.state, trial.attempts) == (TrialState.FAILED, 2)
    assert trial.error == ("failed the same way on nodes n1 and n2, so it was not tried again: "
                           + CRASH.replace("  ...", "  other"))
    assert hub3.study_view(study).study.state is StudyState.COMPLETED


def _fail_three_times(hub: Hub, store: Store, first: str, second: str, third: str) -> str:
    """One trial on nodes n1 and n2 failing with these errors, one attempt each: on n1, on
    n2, then on either (it failed on both); the third gets no retry. Returns the study."""
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    connect(hub, "n2")
    [b] = finish(hub, "n1", a.attempt_id, "failed", first)
    [c] = finish(hub, "n2", b.attempt_id, "failed", second)
    assert c.trial_id == 0
    assert finish(hub, store.get_attempt(c.attempt_id).node_id, c.attempt_id, "failed",
                  third) == []
    return study


@pytest.mark.parametrize("second", [
    CRASH.replace("boom", "bang"),  # another error
    CRASH.replace("exit code 1", "exit code 2"),
    "exit code 1",  # no output to compare
])
def test_a_trial_that_fails_differently_elsewhere_is_tried_up_to_max_attempts(
        hub3: Hub, store: Store, second: str) -> None:
    study = _fail_three_times(hub3, store, CRASH, second, CRASH.replace("boom", "a third way"))
    trial = store.get_trial(study, 0)
    assert (trial.state, trial.attempts) == (TrialState.FAILED, 3)
    assert (trial.error or "").startswith("gave up after 3 attempts")


@pytest.mark.parametrize("error", [
    "memory limit of 1 GB exceeded\nValueError: boom",  # limits differ between providers
    "could not fetch the bundle: timeout",
    "exit code -9 (killed by SIGKILL: the kernel's out-of-memory killer, ...)\nepoch 3",
    "exit code 126\ntunefleet sandbox: [Errno 1] Operation not permitted",  # the launcher's
])
def test_a_failure_that_may_be_the_nodes_is_not_called_the_trials(
        hub3: Hub, store: Store, error: str) -> None:
    study = _fail_three_times(hub3, store, error, error, error)
    assert store.get_trial(study, 0).attempts == 3


def test_a_failed_trial_does_not_wait_for_a_busy_node_while_the_one_it_failed_on_idles(
        hub3: Hub, store: Store) -> None:
    # before, the retry waited for n2, busy with a long trial, while n1 sat idle
    study = submit(hub3, make_spec(budget={"max_trials": 2}))
    [a] = connect(hub3, "n1")
    [b] = connect(hub3, "n2")  # runs trial 1 for a long time
    [c] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)
    assert (c.trial_id, store.get_attempt(c.attempt_id).node_id) == (a.trial_id, "n1")
    assert store.get_trial(study, b.trial_id).state is TrialState.RUNNING


def test_on_a_busy_pool_a_failed_trial_waits_for_another_node_while_its_node_runs_new_ones(
        hub3: Hub, store: Store) -> None:
    # before, the node that had just failed a trial took it back whenever no other node was
    # idle (the normal case in a busy pool), so a trial's own bug ran max_attempts times there
    study = submit(hub3, make_spec(budget={"max_trials": 3}))
    [a] = connect(hub3, "n1")
    [b] = connect(hub3, "n2")  # busy with trial 1
    [c] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)
    assert c.trial_id not in (a.trial_id, b.trial_id)  # n1 runs a new trial
    assert store.get_trial(study, a.trial_id).state is TrialState.PENDING
    [d] = finish(hub3, "n2", b.attempt_id)
    assert (d.trial_id, store.get_attempt(d.attempt_id).node_id) == (a.trial_id, "n2")
    assert finish(hub3, "n2", d.attempt_id, "failed", CRASH) == []  # the same way twice: ends
    assert store.get_trial(study, a.trial_id).state is TrialState.FAILED
    finish(hub3, "n1", c.attempt_id)
    assert hub3.study_view(study).study.state is StudyState.COMPLETED


def test_a_deferred_retry_is_not_starved_by_an_older_study(
        hub3: Hub, store: Store, clock: Clock) -> None:
    # the next node to free up serves the study whose retry waits for it before older ones;
    # else an older study with work left took every freed node and the retry never ran
    x = submit(hub3, make_spec(name="x", budget={"max_trials": 100}, search={
        "searcher": "random", "scheduler": "fifo", "seed": 1, "max_running": 1}))
    y = submit(hub3, make_spec(name="y", budget={"deadline": clock.now + 3600}, search={
        "searcher": "random", "scheduler": "fifo", "seed": 2}))
    [bx] = connect(hub3, "n2")
    [ay] = connect(hub3, "n1")
    assert (bx.study_id, ay.study_id) == (x, y)
    [cy] = finish(hub3, "n1", ay.attempt_id, "failed", CRASH)
    assert (cy.study_id, cy.trial_id) == (y, ay.trial_id + 1)  # a new trial of y on n1
    report(hub3, "n2", bx.attempt_id, 1, 1, 0.5)
    [d] = finish(hub3, "n2", bx.attempt_id)
    assert (d.study_id, d.trial_id) == (y, ay.trial_id)  # the retry, not x's next trial


def test_a_retry_whose_node_restarted_without_it_is_offered_to_an_idle_node(
        hub3: Hub, store: Store) -> None:
    # before, only the restarted node was offered work; the retry, meant for the idle n2,
    # waited forever
    study = submit(hub3, make_spec(budget={"max_trials": 2}))
    [a] = connect(hub3, "n1")
    [b] = connect(hub3, "n2")
    [c] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)  # nothing new: retried on n1
    assert c.trial_id == a.trial_id
    report(hub3, "n2", b.attempt_id, 1, 1, 0.5)
    assert finish(hub3, "n2", b.attempt_id) == []  # n2 idle now
    out = hub3.node_connected("n1", node_pb2.Hello(inventory=node_pb2.Inventory(cpu_slots=1)))
    [d] = assignments(out)
    assert (d.trial_id, store.get_attempt(d.attempt_id).node_id) == (a.trial_id, "n2")
    report(hub3, "n2", d.attempt_id, 1, 1, 0.25)
    finish(hub3, "n2", d.attempt_id)
    assert store.get_trial(study, a.trial_id).state is TrialState.COMPLETED


def test_a_deferred_retry_runs_where_it_failed_once_the_tuner_has_nothing_new(
        hub3: Hub, store: Store) -> None:
    study = submit(hub3, make_spec(budget={"max_trials": 3}))
    [a] = connect(hub3, "n1")
    [b] = connect(hub3, "n2")
    [c] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)  # n1 takes trial 2; 0 waits
    [d] = finish(hub3, "n1", c.attempt_id)  # nothing new is left: the retry runs on n1
    assert (d.trial_id, store.get_attempt(d.attempt_id).node_id) == (a.trial_id, "n1")
    finish(hub3, "n1", d.attempt_id)
    finish(hub3, "n2", b.attempt_id)
    assert hub3.study_view(study).study.state is StudyState.COMPLETED


def test_with_no_other_node_able_to_run_it_a_failed_trial_is_retried_where_it_failed(
        hub3: Hub, store: Store) -> None:
    study = submit(hub3, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub3, "n1")
    connect(hub3, "g1", cpu_slots=0, gpus=[("GPU-a", 24.0)])  # a GPU node: no CPU slot
    [b] = finish(hub3, "n1", a.attempt_id, "failed", CRASH)
    [c] = finish(hub3, "n1", b.attempt_id, "failed", CRASH)  # the same node: not conclusive
    assert {store.get_attempt(x.attempt_id).node_id for x in (b, c)} == {"n1"}
    finish(hub3, "n1", c.attempt_id, "failed", CRASH)
    assert store.get_trial(study, 0).attempts == 3


def test_a_trial_that_ends_without_reporting_the_objective_fails_once_naming_what_it_reported(
        hub3: Hub, store: Store) -> None:
    # before, it was "completed" with no value: a study whose code reported another name spent
    # its whole budget, every trial completed, and no best
    study = submit(hub3, make_spec(budget={"max_trials": 2}))
    [a] = connect(hub3, "n1")
    hub3.report("n1", node_pb2.MetricReport(attempt_id=a.attempt_id, seq=1, step=1,
                                            metrics={"acc": 0.5}), b"env")
    [b] = finish(hub3, "n1", a.attempt_id)  # the next trial, not a retry of this one
    assert b.trial_id != a.trial_id
    trial = store.get_trial(study, a.trial_id)
    assert (trial.state, trial.attempts) == (TrialState.FAILED, 1)
    assert trial.error == ("ended without reporting the objective metric 'loss' (it reported "
                           "acc); [objective] metric must be a name the training code passes "
                           "to trial.report")
    assert store.get_attempt(a.attempt_id).state is AttemptState.FAILED
    finish(hub3, "n1", b.attempt_id)  # reported nothing at all
    assert "(it reported nothing)" in (store.get_trial(study, b.trial_id).error or "")
    assert hub3.study_view(study).study.state is StudyState.COMPLETED
    # the tuner, and a replay of the stored events, hold both as failed
    runtime = hub3.studies.get(study)
    assert runtime is None or {r.state for r in runtime.tuner.trials.values()} == {"failed"}


def test_a_study_no_connected_node_can_run_says_so(hub: Hub, store: Store) -> None:
    # before, status showed "running, 0 running, 0 pending" for ever, with no hint why
    gpu = submit(hub, make_spec(resources={"gpus": 1, "min_gpu_memory_gb": 40}))
    assert hub.study_view(gpu).waiting_for == "no node is connected (its trials need 1 GPU(s) " \
        "with at least 40 GB each)"
    connect(hub, "n1")  # CPU slots only
    connect(hub, "g1", cpu_slots=0, gpus=[("GPU-a", 24.0)])  # too little memory
    assert hub.study_view(gpu).waiting_for.startswith(
        "no connected node can run its trials: they need 1 GPU(s) with at least 40 GB each, "
        "and none of the 2 connected node(s) offers it")
    [a] = connect(hub, "g2", cpu_slots=0, gpus=[("GPU-b", 80.0)])
    assert store.get_attempt(a.attempt_id).node_id == "g2"
    assert hub.study_view(gpu).waiting_for == ""  # it runs
    hub.node_disconnected("g2")  # a node that could run it, gone
    assert hub.study_view(gpu).waiting_for == ""  # its trial still runs there (lease held)


def test_a_report_beyond_fidelity_max_does_not_count_and_stops_the_trial(
        hub: Hub, store: Store) -> None:
    # before, a node could report step 1000 of a study whose fidelity.max is 3, and that
    # value became the trial's (and the study's best); the agent drops such lines too
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    assert report(hub, "n1", a.attempt_id, 1, 1, 0.9) == "continue"
    assert report(hub, "n1", a.attempt_id, 2, 1000, 0.001) == "stop"
    trial = store.get_trial(study, a.trial_id)
    assert (trial.step, trial.value) == (1, 0.9)
    finish(hub, "n1", a.attempt_id)
    assert hub.study_view(study).best.value == 0.9


def test_a_study_whose_last_trial_fails_ends_once(hub: Hub, store: Store,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[tuple[str, StudyState, str]] = []
    end_study = store.end_study

    def spy(study_id: str, state: StudyState, now: float, reason: str) -> None:
        ended.append((study_id, state, reason))
        end_study(study_id, state, now, reason)

    monkeypatch.setattr(store, "end_study", spy)
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    [b] = finish(hub, "n1", a.attempt_id, "failed", "boom")
    assert ended == []
    finish(hub, "n1", b.attempt_id, "failed", "boom")
    assert ended == [(study, StudyState.COMPLETED, "budget spent")]
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_stop_study_needs_the_owner_and_stops_running_attempts(hub: Hub) -> None:
    study = submit(hub, make_spec(), owner="alice")
    [a] = connect(hub, "n1")
    with pytest.raises(NotFoundError, match="not yours"):  # as if it did not exist
        hub.stop_study(study, "mallory")
    assert hub.study_view(study).study.state is StudyState.RUNNING
    out = hub.stop_study(study, "alice")
    assert [(n, m.stop.attempt_id) for n, m in out] == [("n1", a.attempt_id)]
    assert report(hub, "n1", a.attempt_id, 1, 1, 0.3) == "stop"
    finish(hub, "n1", a.attempt_id, "stopped")
    view = hub.study_view(study)
    assert view.study.state is StudyState.STOPPED
    assert view.counts[TrialState.PRUNED] == 1


def test_unknown_searcher_or_missing_bundle_stores_nothing(hub: Hub, store: Store) -> None:
    spec = make_spec()
    with pytest.raises(InvalidInputError, match="bundle_digest"):
        hub.submit_study(spec, "cd" * 32, serde.spec_to_proto(spec, "cd" * 32)
                         .SerializeToString(), "o")
    assert store.list_studies() == []


def test_a_study_with_another_researchers_bundle_is_refused(hub: Hub, store: Store) -> None:
    # the nodes trust a bundle by its publisher: a study may run only its own owner's bundles
    spec = make_spec()
    message = serde.spec_to_proto(spec, DIGEST).SerializeToString()
    with pytest.raises(PermissionDeniedError,
                       match="signed by another key, not by mallory: a study runs only"):
        hub.submit_study(spec, DIGEST, message, "mallory")
    assert store.list_studies() == []
    assert store.bundle_publisher(DIGEST) == "owner"
    assert store.bundle_publisher("cd" * 32) is None
    submit(hub, spec)  # its publisher may
    # the same bytes signed by another (a manifest from before manifests named their
    # publisher): refused, else the first to upload would own them and the other be stuck
    with pytest.raises(StateError, match="stored already, signed by another researcher"):
        hub.put_bundle(DIGEST, b"bundle", b"m" * 32, "mallory", b"s" * 64)
    assert hub.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64) is True


@pytest.mark.parametrize("enqueue", [[], [{"x": 0.31, "k": "c"}, {"x": 0.9, "k": "a"}]],
                         ids=["suggested", "enqueued"])
@pytest.mark.parametrize("searcher, scheduler", [
    ("random", "fifo"), ("tpe", "hyperband"), ("gp", "asha"), ("quasirandom", "median"),
])
def test_restart_rebuilds_the_scheduler_and_makes_the_same_next_decision(
        tmp_path: Path, clock: Clock, searcher: str, scheduler: str,
        enqueue: list[dict[str, Any]]) -> None:
    """Many trials through a real store; a restart in the middle changes no decision."""
    def run(restart_at: int | None) -> list[tuple[int, Any, list[str]]]:
        path = tmp_path / f"{searcher}-{restart_at}.db"
        store = Store(path)
        hub = Hub(store, clock=clock, lease_seconds=10)
        hub.put_bundle(DIGEST, b"b", b"k" * 32, "owner", b"s" * 64)
        spec = make_spec(budget={"max_trials": 14},
                         search={"searcher": searcher, "scheduler": scheduler, "seed": 5,
                                 "enqueue": enqueue},
                         fidelity={"min": 1, "max": 9, "eta": 3},
                         space={"x": {"type": "float", "low": 0.0, "high": 1.0},
                                "k": {"type": "categorical", "choices": ["a", "b", "c"]}},
                         verification={"best": False})
        submit(hub, spec)
        [a] = connect(hub, "n1")
        seen: list[tuple[int, Any, list[str]]] = []
        for n in range(14):
            if restart_at == n:
                store.close()
                store = Store(path)
                hub = Hub(store, clock=clock, lease_seconds=10)
                hub.node_connected("n1", node_pb2.Hello(
                    inventory=node_pb2.Inventory(cpu_slots=1), running_attempts=[a.attempt_id]))
            x = a.params["x"].float_value
            decisions = []
            for step in range(1, 10):
                loss = (x - 0.3) ** 2 + (0.2 if a.params["k"].string_value == "b" else 0) + 1 / step
                decisions.append(report(hub, "n1", a.attempt_id, step, step, loss))
                if decisions[-1] == "stop":
                    break
            seen.append((a.trial_id, dict(a.params), decisions))
            nxt = finish(hub, "n1", a.attempt_id, "stopped" if decisions[-1] == "stop" else
                         "completed")
            if not nxt:
                break
            [a] = nxt
        return seen

    baseline = run(None)
    assert len(baseline) == 14
    assert [(p["x"].float_value, p["k"].string_value) for _, p, _ in baseline[:len(enqueue)]] \
        == [(c["x"], c["k"]) for c in enqueue]
    assert run(restart_at=7) == baseline


def run_trial(hub: Hub, node: str, a: node_pb2.Assignment, loss: float
              ) -> list[node_pb2.Assignment]:
    report(hub, node, a.attempt_id, 1, 1, loss)
    return finish(hub, node, a.attempt_id)


def test_best_trial_is_rerun_on_another_node_and_verified(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 2},
                                  verification={"best": True, "tolerance": 0.01}))
    [a] = connect(hub, "honest")
    [b] = run_trial(hub, "honest", a, 0.50)
    assert run_trial(hub, "honest", b, 0.40) == []  # no other node: nothing to verify on
    assert hub.study_view(study).study.state is StudyState.COMPLETED
    # said so (before, no entry: researchers saw "not verified" and no reason)
    from coordinator.views import study_info_to_proto

    best = study_info_to_proto(hub.study_view(study)).best
    assert (best.verification, best.verification_detail) == (
        "unverifiable", "best trial: no other node could re-run it")

    study2 = submit(hub, make_spec(budget={"max_trials": 1},
                                   verification={"best": True, "tolerance": 0.01}))
    [c] = assignments(hub.assign("honest"))
    connect(hub, "checker")
    report(hub, "honest", c.attempt_id, 1, 1, 0.30)
    out = hub.finished("honest", node_pb2.AttemptFinished(attempt_id=c.attempt_id,
                                                          outcome="completed"))
    # The re-run goes to the *other* node, with the same configuration.
    [v] = [m.assignment for n, m in out
           if m.WhichOneof("kind") == "assignment" and n == "checker"]
    assert not [n for n, m in out if m.WhichOneof("kind") == "assignment" and n == "honest"]
    assert v.trial_id == c.trial_id and dict(v.params) == dict(c.params)
    assert hub.study_view(study2).study.state is StudyState.RUNNING
    report(hub, "checker", v.attempt_id, 1, 1, 0.302)
    finish(hub, "checker", v.attempt_id)
    view = hub.study_view(study2)
    assert view.study.state is StudyState.COMPLETED
    assert store.verification_of(study2, 0)["state"] == "verified"
    assert store.get_node("honest").flagged == 0
    # The re-run's reports never reached the scheduler nor changed the trial's value.
    assert store.get_trial(study2, 0).value == 0.30


def rerun_after(hub: Hub, node: str, attempt_id: int, loss: float, checker: str = "checker"
                ) -> node_pb2.Assignment:
    """Report ``loss`` for the attempt, finish it, and return the re-run leased to ``checker``."""
    report(hub, node, attempt_id, 1, 1, loss)
    out = hub.finished(node, node_pb2.AttemptFinished(attempt_id=attempt_id, outcome="completed"))
    [rerun] = [m.assignment for n, m in out
               if m.WhichOneof("kind") == "assignment" and n == checker]
    return rerun


def test_a_study_waits_for_a_running_rerun_whose_node_is_reconnecting(
        hub: Hub, store: Store, clock: Clock) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1},
                                  verification={"best": True, "tolerance": 0.01}))
    [a] = connect(hub, "honest")
    connect(hub, "checker")
    v = rerun_after(hub, "honest", a.attempt_id, 0.30)
    hub.node_disconnected("checker")  # e.g. a coordinator restart the checker has not seen yet
    assert assignments(hub.assign("honest")) == []  # the original node asks for work
    assert hub.study_view(study).study.state is StudyState.RUNNING  # the re-run still counts
    assert store.verification_of(study, 0)["state"] == "running"
    hub.node_connected("checker", node_pb2.Hello(  # it comes back, still running the re-run
        inventory=node_pb2.Inventory(cpu_slots=1), running_attempts=[v.attempt_id]))
    report(hub, "checker", v.attempt_id, 1, 1, 0.301)
    finish(hub, "checker", v.attempt_id)
    assert hub.study_view(study).study.state is StudyState.COMPLETED
    assert store.verification_of(study, 0)["state"] == "verified"
    assert store.get_attempt(v.attempt_id).state is AttemptState.COMPLETED

    # A re-run whose node never comes back: its lease lapses, no node is left to re-run it,
    # and the study completes with the verification failed; nothing stays running.
    study2 = submit(hub, make_spec(budget={"max_trials": 1},
                                   verification={"best": True, "tolerance": 0.01}))
    [b] = assignments(hub.assign("honest"))
    w = rerun_after(hub, "honest", b.attempt_id, 0.30)
    hub.node_disconnected("checker")
    hub.node_disconnected("honest")  # no node asks for work: the lapse alone must end it
    clock.now += 60
    assert assignments(hub.expire_leases()) == []
    assert store.get_attempt(w.attempt_id).state is AttemptState.LOST
    assert hub.study_view(study2).study.state is StudyState.COMPLETED
    assert store.verification_of(study2, 0)["state"] == "failed"


def test_disagreeing_rerun_flags_the_original_node(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1},
                                  verification={"best": True, "tolerance": 0.05}))
    [a] = connect(hub, "cheater")
    connect(hub, "checker")
    v = rerun_after(hub, "cheater", a.attempt_id, 0.01)  # a faked, too-good loss
    report(hub, "checker", v.attempt_id, 1, 1, 0.9)
    finish(hub, "checker", v.attempt_id)
    assert store.verification_of(study, 0)["state"] == "disputed"
    cheater = store.get_node("cheater")
    assert cheater.flagged == 1 and cheater.reputation == 0.5
    assert store.get_node("checker").flagged == 0


def test_sampled_fraction_is_verified(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 4},
                                  verification={"fraction": 1.0, "best": False}))
    [a] = connect(hub, "n1")
    connect(hub, "n2")
    first = hub.store.running_attempts()
    assert len(first) == 2
    for attempt in first:
        report(hub, attempt.node_id, attempt.id, 1, 1, 0.5)
        hub.finished(attempt.node_id, node_pb2.AttemptFinished(attempt_id=attempt.id,
                                                               outcome="completed"))
    rows = store.verifications(study)
    assert {r["trial_number"] for r in rows} == {0, 1}
    assert all(r["state"] in ("pending", "running") for r in rows)
    running = {r["attempt_id"]: r for r in rows if r["state"] == "running"}
    for attempt_id, row in running.items():
        assert store.get_attempt(attempt_id).node_id != row["original_node_id"]


def test_node_inventory_and_finished_outcomes_are_checked(hub: Hub) -> None:
    submit(hub, make_spec())
    with pytest.raises(InvalidInputError, match="cpu_slots"):
        connect(hub, "greedy", cpu_slots=2**31 - 1)
    [a] = connect(hub, "n1")
    with pytest.raises(InvalidInputError, match="outcome"):
        hub.finished("n1", node_pb2.AttemptFinished(attempt_id=a.attempt_id, outcome="won"))
    with pytest.raises(InvalidInputError, match="report.step"):
        report(hub, "n1", a.attempt_id, 1, -1, 0.5)
    assert hub.store.get_attempt(a.attempt_id).state is AttemptState.RUNNING


def test_unban_lifts_a_ban_but_keeps_an_admission(hub: Hub) -> None:
    hub.operator_key_id = "op"
    key = "ab" * 16
    hub.change_access("op", key, "admit", "")
    hub.change_access("op", key, "unban", "")
    hub.check_researcher(key)  # still admitted
    hub.change_access("op", key, "ban", "spam")
    with pytest.raises(PermissionDeniedError, match="spam"):
        hub.check_researcher(key)
    hub.change_access("op", key, "unban", "")
    with pytest.raises(PermissionDeniedError, match="not admitted"):
        hub.check_researcher(key)


def test_a_grid_too_large_to_enumerate_is_refused(hub: Hub, store: Store) -> None:
    space = {f"p{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(12)}
    spec = make_spec(space=space, search={"searcher": "grid", "scheduler": "fifo"}, budget={})
    with pytest.raises(InvalidInputError, match="points"):
        submit(hub, spec)
    assert store.list_studies() == []


def test_a_gp_over_too_many_categorical_choices_is_refused(hub: Hub, store: Store) -> None:
    # one input per choice: 10 numeric parameters and 60 choices make 70 inputs (at most 64);
    # a 10,000-choice categorical once took 7.5 GB by its 24th suggestion
    space = {f"p{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(10)}
    space["width"] = {"type": "categorical", "choices": list(range(60))}
    spec = make_spec(space=space, search={"searcher": "gp", "scheduler": "fifo"})
    with pytest.raises(InvalidInputError, match="70 columns .* at most 64 .* use tpe"):
        submit(hub, spec)
    assert store.list_studies() == []
    space["width"] = {"type": "categorical", "choices": list(range(54))}  # 64 inputs: fine
    submit(hub, make_spec(space=space, search={"searcher": "gp", "scheduler": "fifo"}))


def test_max_running_caps_the_trials_leased_at_once(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(search={"searcher": "random", "scheduler": "fifo", "seed": 7,
                                          "max_running": 2}))
    leased = connect(hub, "n1", cpu_slots=3)
    assert len(leased) == 2  # three free slots, but the study runs at most two trials
    assert connect(hub, "n2", cpu_slots=2) == []
    first = leased[0]
    for step in (1, 2, 3):
        report(hub, "n1", first.attempt_id, step, step, 1.0)
    nxt = finish(hub, "n1", first.attempt_id)
    assert len(nxt) == 1  # one place freed, one new trial
    running = store.list_trials(study, TrialState.RUNNING)
    assert len(running) == 2


def test_only_the_owner_and_the_operator_read_a_study(store: Store, clock: Clock) -> None:
    hub = Hub(store, clock=clock, lease_seconds=10.0, max_attempts=2, operator_key_id="op",
              open_admission=True)
    hub.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    mine = submit(hub, make_spec(), owner="alice")
    theirs = submit(hub, make_spec(), owner="bob")
    hub.check_reader("alice", mine)
    hub.check_reader("op", theirs)
    with pytest.raises(NotFoundError, match="only its owner or the operator") as foreign:
        hub.check_reader("alice", theirs)
    with pytest.raises(NotFoundError) as missing:
        hub.check_reader("alice", "no-such-study")
    # a stranger cannot tell another researcher's study from one that does not exist
    assert str(foreign.value).replace(theirs, "ID") == str(missing.value).replace(
        "no-such-study", "ID")
    with pytest.raises(NotFoundError, match="only its owner or the operator"):
        hub.stop_study(theirs, "alice")
    assert hub.store.get_study(theirs).state is StudyState.RUNNING
    assert [v.study.id for v in hub.list_studies("alice")] == [mine]
    assert {v.study.id for v in hub.list_studies("op")} == {mine, theirs}
    assert {v.study.id for v in hub.list_studies()} == {mine, theirs}
    # after a restart without --open, alice (never admitted) still follows her own study
    hub.open_admission = False
    with pytest.raises(PermissionDeniedError, match="not admitted"):
        hub.check_researcher("alice")  # but submits no more
    hub.check_reader("alice")
    hub.check_reader("alice", mine)
    with pytest.raises(NotFoundError, match="only its owner or the operator"):
        hub.check_reader("carol", mine)  # a stranger, admitted or not
    hub.change_access("op", "ab" * 16, "ban", "abuse")
    with pytest.raises(PermissionDeniedError, match="abuse"):
        hub.check_reader("ab" * 16)


def test_a_capped_study_offers_a_freed_place_to_every_node(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec(search={"searcher": "random", "scheduler": "fifo", "seed": 7,
                                          "max_running": 1}))
    [a] = connect(hub, "n1", cpu_slots=1)
    assert connect(hub, "n2", cpu_slots=1) == []  # the cap holds the second trial back
    hub.heartbeat("n1", node_pb2.Heartbeat(draining=True, running_attempts=[a.attempt_id]))
    out = hub.finished("n1", node_pb2.AttemptFinished(attempt_id=a.attempt_id,
                                                      outcome="completed"))
    leased = [(node, m.assignment) for node, m in out if m.WhichOneof("kind") == "assignment"]
    assert [node for node, _ in leased] == ["n2"]  # n1 drains: the next trial goes to n2
    assert [t.number for t in store.list_trials(study, TrialState.RUNNING)] == [1]


def test_a_grid_study_completes_when_its_last_point_ends_on_a_draining_node(
        hub: Hub, store: Store) -> None:
    # before, the tuner learnt that the grid had run dry only at one more ask, which nobody
    # made: the draining node asks for nothing, and the study stayed running
    spec = make_spec(budget={}, search={"searcher": "grid", "scheduler": "fifo", "seed": 7},
                     space={"c": {"type": "categorical", "choices": ["only"]}},
                     verification={"best": False})
    study = submit(hub, spec)
    [a] = connect(hub, "n1")
    for step in (1, 2, 3):
        report(hub, "n1", a.attempt_id, step, step, 0.5)
    hub.heartbeat("n1", node_pb2.Heartbeat(draining=True, running_attempts=[a.attempt_id]))
    hub.finished("n1", node_pb2.AttemptFinished(attempt_id=a.attempt_id, outcome="completed"))
    assert hub.study_view(study).study.state is StudyState.COMPLETED
    assert [t.number for t in store.list_trials(study, TrialState.COMPLETED)] == [0]
    # before, "budget spent", though the study had no budget
    assert store.get_study(study).end_reason == "every grid point tried"


def test_a_grid_study_its_budget_ends_first_says_so(hub: Hub, store: Store) -> None:
    spec = make_spec(budget={"max_trials": 1},
                     search={"searcher": "grid", "scheduler": "fifo", "seed": 7},
                     space={"c": {"type": "categorical", "choices": ["a", "b"]}},
                     verification={"best": False})
    study = submit(hub, spec)
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 3, 0.5)
    finish(hub, "n1", a.attempt_id)
    assert store.get_study(study).end_reason == "budget spent"


def test_replay_keeps_the_parameters_a_trial_ran_with(tmp_path: Path, clock: Clock) -> None:
    """After an upgrade that changes a searcher's defaults, a replayed suggestion may differ
    from what was stored and run; the tuner adopts the stored parameters."""
    path = tmp_path / "c.db"
    store = Store(path)
    hub = Hub(store, clock=clock, lease_seconds=10)
    hub.put_bundle(DIGEST, b"b", b"k" * 32, "owner", b"s" * 64)
    study = submit(hub, make_spec(search={"searcher": "tpe", "scheduler": "fifo", "seed": 5}))
    [a] = connect(hub, "n1")
    with store.atomic():  # what an older release would have suggested and run
        store.conn.execute("UPDATE trials SET params = ? WHERE study_id = ? AND number = ?",
                           ('{"x": 0.123}', study, a.trial_id))
    store.close()
    store = Store(path)
    again = Hub(store, clock=clock, lease_seconds=10)
    tuner = again.studies[study].tuner
    assert tuner.trials[a.trial_id].params == {"x": 0.123}
    point = tuner.searcher._history._trials[a.trial_id].point  # type: ignore[attr-defined]
    assert point.tolist() == [0.123]
    store.close()


def test_replay_keeps_the_schedulers_defaults_a_study_was_submitted_with(
        tmp_path: Path, clock: Clock) -> None:
    """A study submitted before Hyperband leaned to bracket 0 is rebuilt without the lean, so a
    coordinator upgraded mid-study keeps making the decisions it was making."""
    path = tmp_path / "c.db"
    store = Store(path)
    hub = Hub(store, clock=clock, lease_seconds=10)
    hub.put_bundle(DIGEST, b"b", b"k" * 32, "owner", b"s" * 64)
    hyperband = {"searcher": "random", "scheduler": "hyperband", "seed": 5}
    old, mid, late, fourth, new = (submit(hub, make_spec(search=hyperband)) for _ in range(5))
    assert store.get_study(new).scheduling_defaults == DEFAULTS_VERSION == 5
    assert hub.studies[old].tuner.scheduler.lean == 0.9  # type: ignore[attr-defined]
    with store.atomic():  # what earlier releases stored (1: the migration's default)
        store.conn.execute("UPDATE studies SET scheduling_defaults = 1 WHERE id = ?", (old,))
        store.conn.execute("UPDATE studies SET scheduling_defaults = 2 WHERE id = ?", (mid,))
        store.conn.execute("UPDATE studies SET scheduling_defaults = 3 WHERE id = ?", (late,))
        store.conn.execute("UPDATE studies SET scheduling_defaults = 4 WHERE id = ?", (fourth,))
    store.close()
    store = Store(path)
    again = Hub(store, clock=clock, lease_seconds=10)
    rebuilt = [again.studies[study].tuner.scheduler for study in (old, mid, late, fourth, new)]
    assert [(s.lean, s.probe_share_crowded, s.first_keep,  # type: ignore[attr-defined]
             s.min_pairs) for s in rebuilt] == [  # type: ignore[attr-defined]
        (None, None, None, 4), (0.9, None, None, 4), (0.9, 0.7, None, 4), (0.9, 0.7, 0.2, 4),
        (0.9, 0.7, 0.2, 3)]
    store.close()
    spec = make_spec(search=hyperband)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(InvalidInputError,
                           match=r"^scheduling_defaults: got .*; must be an integer from 1 to"):
            build_tuner(spec, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="from a newer tunefleet, upgrade"):
        build_tuner(spec, DEFAULTS_VERSION + 1)


def test_a_database_from_before_the_defaults_version_migrates_to_version_1(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for number in (1, 2, 3):  # the schema of the previous release
        for statement in MIGRATIONS[number]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
    conn.execute("INSERT INTO studies (id, name, owner_key_id, spec, bundle_digest, state, "
                 "created_at) VALUES ('s1', 'old', 'o', x'', 'd', 'running', 1.0)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.get_study("s1").scheduling_defaults == 1
    store.close()


def test_a_failed_lease_leaves_no_phantom_trial_in_the_tuner(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = submit(hub, make_spec(search={"searcher": "random", "scheduler": "fifo", "seed": 7,
                                          "max_running": 1}))
    real = store.insert_attempt

    def broken(attempt: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "insert_attempt", broken)
    with pytest.raises(OSError):
        connect(hub, "n1", cpu_slots=1)
    assert store.list_trials(study) == []  # the transaction rolled back
    assert hub.studies[study].tuner.running == []  # and the tuner counts nothing running
    monkeypatch.setattr(store, "insert_attempt", real)
    [a] = assignments(hub.assign_all())  # n1's session was opened before the failure
    assert a.trial_id == 0  # the cap of one is free again, and the trial numbers go on from 0


def finished_event(attempt_id: int) -> node_pb2.NodeEvent:
    return node_pb2.NodeEvent(
        finished=node_pb2.AttemptFinished(attempt_id=attempt_id, outcome="completed"))


def test_an_event_that_fails_after_the_tuner_saw_it_leaves_the_tuner_as_the_store_is(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 2}))
    [first] = connect(hub, "n1", cpu_slots=1)
    assert report(hub, "n1", first.attempt_id, 1, 1, 0.5) == "continue"
    real = store.append_event

    def broken(study_id: str, kind: str, *args: Any) -> None:
        if kind == "complete":
            raise OSError("disk full")
        real(study_id, kind, *args)

    monkeypatch.setattr(store, "append_event", broken)
    [result] = hub.node_events([("n1", 1, finished_event(first.attempt_id), b"raw")])
    assert isinstance(result, OSError)
    # the event rolled back in the store, and the tuner no longer counts the completion
    assert store.get_trial(study, first.trial_id).state is TrialState.RUNNING
    assert hub.studies[study].tuner.running == [first.trial_id]
    monkeypatch.setattr(store, "append_event", real)
    [outbox] = hub.node_events([("n1", 2, finished_event(first.attempt_id), b"raw")])
    assert not isinstance(outbox, Exception)
    assert store.get_trial(study, first.trial_id).state is TrialState.COMPLETED
    [second] = assignments(outbox)
    assert second.trial_id == first.trial_id + 1


def test_a_study_completed_by_an_event_that_rolls_back_stays_scheduled(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = submit(hub, make_spec(budget={"max_trials": 1}))
    [only] = connect(hub, "n1", cpu_slots=1)
    other = submit(hub, make_spec(name="other"))
    assert report(hub, "n1", only.attempt_id, 1, 1, 0.5) == "continue"
    real = store.insert_attempt

    def broken(attempt: Any) -> None:
        raise OSError("disk full")

    # finishing the last trial completes the study; the lease of the other study's trial that
    # follows in the same event fails, so the whole event, completion included, rolls back
    monkeypatch.setattr(store, "insert_attempt", broken)
    [result] = hub.node_events([("n1", 1, finished_event(only.attempt_id), b"raw")])
    assert isinstance(result, OSError)
    assert store.get_study(done).state is StudyState.RUNNING
    assert hub.studies[done].tuner.running == [only.trial_id]  # still scheduled, as stored
    assert hub.studies[other].tuner.trials == {}  # the failed lease left no phantom trial
    monkeypatch.setattr(store, "insert_attempt", real)
    [outbox] = hub.node_events([("n1", 2, finished_event(only.attempt_id), b"raw")])
    assert not isinstance(outbox, Exception)
    assert store.get_study(done).state is StudyState.COMPLETED
    assert done not in hub.studies
    [lease] = assignments(outbox)
    assert (lease.study_id, lease.trial_id) == (other, 0)


def make_commit_fail(store: Store) -> Any:
    """A deferred foreign key: a transaction that writes the returned statement fails at COMMIT
    (SQLite leaves it open then), the way a commit fails for real."""
    store.conn.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
    store.conn.execute("CREATE TEMP TABLE child (parent_id INTEGER REFERENCES parent (id) "
                       "DEFERRABLE INITIALLY DEFERRED)")
    return lambda: store.conn.execute("INSERT INTO child VALUES (1)")


def test_a_failed_commit_rolls_back_and_the_store_goes_on(store: Store) -> None:
    orphan = make_commit_fail(store)
    with pytest.raises(sqlite3.IntegrityError), store.atomic():
        store.set_access("cd" * 16, "admitted", "r", 1.0)
        orphan()
    assert not store.conn.in_transaction
    assert store.get_access("cd" * 16) is None
    with store.atomic():  # the next transaction starts
        store.set_access("cd" * 16, "admitted", "r", 1.0)
    assert store.get_access("cd" * 16) is not None


def test_a_failed_commit_of_a_batch_rebuilds_every_study_it_touched(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = submit(hub, make_spec(budget={"max_trials": 1}))
    [only] = connect(hub, "n1", cpu_slots=1)
    orphan, real = make_commit_fail(store), store.end_study

    def end_study(*args: Any) -> None:  # completing the study also writes what fails at COMMIT
        real(*args)
        orphan()

    monkeypatch.setattr(store, "end_study", end_study)
    with pytest.raises(sqlite3.IntegrityError):
        hub.node_events([("n1", 1, finished_event(only.attempt_id), b"raw")])
    assert store.get_study(done).state is StudyState.RUNNING
    assert hub.studies[done].tuner.running == [only.trial_id]


def test_a_ban_that_fails_half_way_changes_nothing(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.operator_key_id = "op"
    owner = "ab" * 16
    first, second = submit(hub, make_spec(), owner), submit(hub, make_spec(name="b"), owner)
    real, calls = store.end_study, []

    def end_study(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        real(*args)

    monkeypatch.setattr(store, "end_study", end_study)
    with pytest.raises(OSError):
        hub.change_access("op", owner, "ban", "spam")
    assert {store.get_study(s).state for s in (first, second)} == {StudyState.RUNNING}
    assert set(hub.studies) == {first, second}  # both still scheduled
    assert owner not in hub.banned
    monkeypatch.setattr(store, "end_study", real)
    hub.change_access("op", owner, "ban", "spam")
    assert {store.get_study(s).state for s in (first, second)} == {StudyState.STOPPED}
    assert hub.studies == {} and owner in hub.banned


def test_a_decline_that_rolls_back_leaves_no_trace_in_memory(
    hub: Hub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = submit(hub, make_spec())
    [first] = connect(hub, "n1", cpu_slots=1)
    connect(hub, "n2", cpu_slots=0)
    hub.sessions["n2"].inventory.cpu_slots = 1  # n2 gets a free slot only now
    real = store.insert_attempt

    def broken(attempt: Any) -> None:
        raise OSError("disk full")

    declined = node_pb2.NodeEvent(declined=node_pb2.AttemptDeclined(
        attempt_id=first.attempt_id, reason="publisher not trusted"))
    # the decline offers the trial to n2, and that lease fails: the whole event rolls back
    monkeypatch.setattr(store, "insert_attempt", broken)
    [result] = hub.node_events([("n1", 1, declined, b"raw")])
    assert isinstance(result, OSError)
    assert ("n1", study) not in hub.declined  # as in the store: the attempt still runs
    assert store.get_attempt(first.attempt_id).state is AttemptState.RUNNING
    monkeypatch.setattr(store, "insert_attempt", real)
    # the rolled-back event did not use up its sequence number either
    [outbox] = hub.node_events([("n1", 1, declined, b"raw")])
    assert not isinstance(outbox, Exception)
    assert ("n1", study) in hub.declined
    [lease] = assignments(outbox)
    assert lease.trial_id == first.trial_id


@pytest.mark.parametrize(("util", "memory", "stored"), [
    (87.5, 12.25, (87.5, 12.25)),
    (100.0, 0.0, (100.0, 0.0)),
    (101.0, 1.0, (None, None)),  # implausible figures from a node are dropped
    (50.0, -1.0, (None, None)),
    (math.nan, 1.0, (None, None)),
])
def test_the_gpu_use_a_node_measured_is_kept_with_the_attempt(
    hub: Hub, store: Store, util: float, memory: float, stored: tuple[Any, Any]
) -> None:
    study = submit(hub, make_spec(resources={"gpus": 1, "min_gpu_memory_gb": 1}))
    [a] = connect(hub, "n1", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    assert list(a.gpu_uuids) == ["GPU-a"]
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    hub.finished("n1", node_pb2.AttemptFinished(
        attempt_id=a.attempt_id, outcome="completed", gpu_utilization=util,
        gpu_memory_peak_gb=memory))
    [attempt] = store.attempts_of_trial(study, a.trial_id)
    assert (attempt.gpu_utilization, attempt.gpu_memory_peak_gb) == stored


def test_gpu_figures_for_an_attempt_without_gpus_are_ignored(hub: Hub, store: Store) -> None:
    study = submit(hub, make_spec())
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    hub.finished("n1", node_pb2.AttemptFinished(
        attempt_id=a.attempt_id, outcome="completed", gpu_utilization=50.0,
        gpu_memory_peak_gb=1.0))
    [attempt] = store.attempts_of_trial(study, a.trial_id)
    assert (attempt.gpu_utilization, attempt.gpu_memory_peak_gb) == (None, None)


def test_researchers_see_the_gpu_use_of_each_trial(hub: Hub, store: Store) -> None:
    from coordinator.trial_pages import trial_page

    study = submit(hub, make_spec(budget={"max_trials": 2},
                                  resources={"gpus": 1, "min_gpu_memory_gb": 1}))
    [a] = connect(hub, "n1", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    [b] = assignments(hub.finished("n1", node_pb2.AttemptFinished(
        attempt_id=a.attempt_id, outcome="completed", gpu_utilization=91.0,
        gpu_memory_peak_gb=3.5)))
    report(hub, "n1", b.attempt_id, 1, 1, 0.4)
    hub.finished("n1", node_pb2.AttemptFinished(attempt_id=b.attempt_id, outcome="completed"))
    shown = {t.trial_id: t for t in trial_page(store, study, False).trials}
    assert (shown[a.trial_id].gpu_utilization, shown[a.trial_id].gpu_memory_peak_gb) == (91.0,
                                                                                          3.5)
    assert not shown[b.trial_id].HasField("gpu_utilization")  # its node measured nothing


def test_a_gpu_hour_budget_stops_the_study_when_its_attempts_have_held_it(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"max_gpu_hours": 20 / 3600},  # 20 GPU-seconds
                                  resources={"gpus": 1, "min_gpu_memory_gb": 1}))
    [a] = connect(hub, "n1", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    clock.now += 8
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    [b] = finish(hub, "n1", a.attempt_id)  # 8 GPU-seconds held: the next trial starts
    clock.now += 6
    assert hub.enforce_limits() == []  # 14 of 20
    report(hub, "n1", b.attempt_id, 1, 1, 0.4)
    clock.now += 7
    out = hub.enforce_limits()  # 21 of 20: the running attempt is told to stop, once
    assert [(n, m.stop.attempt_id) for n, m in out] == [("n1", b.attempt_id)]
    assert "max_gpu_hours reached" in out[0][1].stop.reason
    assert hub.enforce_limits() == []
    assert hub.gpu_hours_used(study, clock.now) == pytest.approx(21 / 3600)
    assert finish(hub, "n1", b.attempt_id, "stopped") == []  # nothing new starts
    view = hub.study_view(study)
    assert view.study.state is StudyState.COMPLETED
    assert view.counts[TrialState.COMPLETED] == 1 and view.counts[TrialState.PRUNED] == 1
    assert view.best is not None and view.best.value == 0.5
    assert store.get_study(study).end_reason == (
        "max_gpu_hours reached (0.00583 of 0.00556 GPU-hours held)")


def test_a_deadline_ends_the_study_even_before_the_sweep_sees_it(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    clock.now += 11
    assert finish(hub, "n1", a.attempt_id) == []  # past the deadline no trial starts
    assert hub.study_view(study).study.state is StudyState.RUNNING  # until the sweep
    assert hub.enforce_limits() == []  # nothing runs: it just completes
    assert hub.study_view(study).study.state is StudyState.COMPLETED
    assert hub.study_view(study).counts[TrialState.COMPLETED] == 1
    assert store.get_study(study).end_reason == "deadline 1970-01-01T00:16:50Z passed"


def test_a_deadline_stops_running_trials_and_fails_pending_ones(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10},
                                  verification={"best": False}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    hub.node_disconnected("n1")
    clock.now += 10.5  # the lease (10 s) has lapsed too: the trial waits for a node again
    hub.expire_leases()
    assert hub.study_view(study).counts[TrialState.PENDING] == 1
    assert hub.enforce_limits() == []
    view = hub.study_view(study)
    assert view.study.state is StudyState.COMPLETED
    [trial] = [t for t in store.list_trials(study) if t.number == a.trial_id]
    assert trial.state is TrialState.FAILED and "deadline" in (trial.error or "")


def test_a_best_a_limit_kept_from_its_re_run_says_why_it_is_not_verified(
    hub: Hub, store: Store, clock: Clock
) -> None:
    # before, best.json and `best` showed verification "none" with no word of why
    from coordinator.views import study_info_to_proto

    study = submit(hub, make_spec(budget={"deadline": clock.now + 10}))  # best = true
    [a] = connect(hub, "n1")
    connect(hub, "n2")
    for step in (1, 2, 3):
        report(hub, "n1", a.attempt_id, step, step, 0.5)
    finish(hub, "n1", a.attempt_id)
    clock.now += 10
    hub.enforce_limits()
    for attempt in store.running_attempts():  # the stopped trial ends, as its node tells
        finish(hub, attempt.node_id, attempt.id, "stopped")
    info = study_info_to_proto(hub.study_view(study))
    assert info.state == "completed" and info.best.trial_id == a.trial_id
    assert info.best.verification == "none"
    assert info.best.verification_detail.startswith("not re-run: the study ended (deadline")


def test_a_deadline_already_past_is_refused_and_nothing_is_stored(
    hub: Hub, store: Store, clock: Clock
) -> None:
    with pytest.raises(InvalidInputError, match="budget.deadline: got '1970-01-01T00:16:40Z'; "
                                                "is past"):
        submit(hub, make_spec(budget={"deadline": clock.now}))
    assert store.list_studies() == []


def test_a_trial_that_ends_cleanly_when_a_limit_stops_it_short_of_max_is_pruned(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10, "max_trials": 5},
                                  verification={"best": False}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)  # step 1 of 3
    clock.now += 10
    [(_, stop)] = hub.enforce_limits()
    assert stop.stop.attempt_id == a.attempt_id
    finish(hub, "n1", a.attempt_id, "completed")  # the code saw should_stop() and returned
    [trial] = store.list_trials(study)
    assert trial.state is TrialState.PRUNED and trial.value == 0.5
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_a_trial_that_comes_back_after_a_limit_fails_and_the_study_completes(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10, "max_trials": 5}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    clock.now += 10
    assert len(hub.enforce_limits()) == 1  # the stop goes out
    hub.node_disconnected("n1")  # ... and the node is gone before it ends the attempt
    clock.now += 10.5
    hub.expire_leases()  # lost: its trial waits for a node again
    hub.enforce_limits()
    [trial] = store.list_trials(study)
    assert trial.state is TrialState.FAILED and "deadline" in (trial.error or "")
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_a_node_that_missed_the_stop_is_told_again(hub: Hub, store: Store, clock: Clock) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10, "max_trials": 5}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    hub.node_disconnected("n1")
    clock.now += 10
    hub.enforce_limits()  # its stop finds no session: lost
    out = hub.node_connected("n1", node_pb2.Hello(
        inventory=node_pb2.Inventory(cpu_slots=1), running_attempts=[a.attempt_id]))
    assert [m.stop.attempt_id for _, m in out if m.WhichOneof("kind") == "stop"] == [a.attempt_id]
    beat = hub.heartbeat("n1", node_pb2.Heartbeat(running_attempts=[a.attempt_id]))
    assert [m.stop.attempt_id for _, m in beat] == [a.attempt_id]
    assert report(hub, "n1", a.attempt_id, 2, 2, 0.4) == "stop"  # its value still counts
    finish(hub, "n1", a.attempt_id, "stopped")
    [trial] = store.list_trials(study)
    assert trial.state is TrialState.PRUNED and trial.value == 0.4
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_a_verification_rerun_cut_short_by_a_limit_flags_nobody(
    hub: Hub, store: Store, clock: Clock
) -> None:
    study = submit(hub, make_spec(budget={"max_trials": 1, "deadline": clock.now + 100},
                                  verification={"best": True, "tolerance": 0.01}))
    [c] = connect(hub, "honest")
    connect(hub, "checker")
    report(hub, "honest", c.attempt_id, 3, 3, 0.30)
    out = hub.finished("honest", node_pb2.AttemptFinished(attempt_id=c.attempt_id,
                                                          outcome="completed"))
    [v] = [m.assignment for n, m in out if m.WhichOneof("kind") == "assignment"]
    report(hub, "checker", v.attempt_id, 1, 1, 0.9)  # an early step, far from 0.30
    clock.now += 100
    assert [m.stop.attempt_id for _, m in hub.enforce_limits()] == [v.attempt_id]
    finish(hub, "checker", v.attempt_id, "completed")  # it saw should_stop() and returned
    assert store.verification_of(study, 0)["state"] == "failed"
    assert (store.get_node("honest").flagged, store.get_node("honest").reputation) == (0, 1.0)
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_a_limit_whose_unit_fails_is_tried_again_at_the_next_sweep(
    hub: Hub, store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10, "max_trials": 5}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    clock.now += 10
    real = store.update_verification
    monkeypatch.setattr(store, "running_attempts",
                        lambda *args: (_ for _ in ()).throw(sqlite3.OperationalError("locked")))
    with pytest.raises(sqlite3.OperationalError):
        hub.enforce_limits()
    monkeypatch.undo()
    assert store.update_verification == real
    assert [m.stop.attempt_id for _, m in hub.enforce_limits()] == [a.attempt_id]
    finish(hub, "n1", a.attempt_id, "stopped")
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_the_ledger_prices_each_attempt_as_it_was_leased(store: Store, clock: Clock,
                                                        tmp_path: Path) -> None:
    hub = Hub(store, clock=clock, lease_seconds=100.0, price_gpu_hour=2.0, price_slot_hour=0.5)
    hub.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    study = submit(hub, make_spec(budget={"max_trials": 2},
                                  resources={"gpus": 1, "min_gpu_memory_gb": 1}), owner="alice")
    [a] = connect(hub, "n1", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    clock.now += 36  # 0.01 h on one GPU: 0.01 * 2 + 0.01 * 0.5 credits
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)
    [b] = finish(hub, "n1", a.attempt_id)
    view = hub.study_view(study)
    assert (view.gpu_hours, view.credits) == (pytest.approx(0.01), pytest.approx(0.025))
    later = Hub(store, clock=clock, lease_seconds=100.0, price_gpu_hour=10.0)  # a new price
    clock.now += 36  # the running attempt keeps the price it was leased at
    assert later.study_view(study).credits == pytest.approx(0.05)
    with pytest.raises(InvalidInputError, match="price_gpu_hour: got -1"):
        Hub(store, clock=clock, price_gpu_hour=-1)
    assert b.attempt_id


def test_a_credit_budget_stops_the_study(store: Store, clock: Clock) -> None:
    hub = Hub(store, clock=clock, lease_seconds=100.0, price_gpu_hour=0.0, price_slot_hour=3.6)
    hub.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    study = submit(hub, make_spec(budget={"max_credits": 0.01}))  # 10 s at 3.6 per hour
    [a] = connect(hub, "n1")
    clock.now += 9
    assert hub.enforce_limits() == []
    clock.now += 2
    [(_, stop)] = hub.enforce_limits()
    assert stop.stop.attempt_id == a.attempt_id and "max_credits reached" in stop.stop.reason
    finish(hub, "n1", a.attempt_id, "stopped")
    assert hub.study_view(study).study.state is StudyState.COMPLETED


def test_a_lost_attempt_is_billed_until_its_last_sign_of_life(hub: Hub, store: Store,
                                                              clock: Clock) -> None:
    study = submit(hub, make_spec(resources={"gpus": 1, "min_gpu_memory_gb": 1}))
    [a] = connect(hub, "n1", cpu_slots=0, gpus=[("GPU-a", 24.0)])
    clock.now += 5
    report(hub, "n1", a.attempt_id, 1, 1, 0.5)  # its last sign of life, at +5
    hub.node_disconnected("n1")
    clock.now += 3600  # the sweep notices an hour later (the coordinator was down, say)
    hub.expire_leases()
    [attempt] = store.attempts_of_trial(study, 0)
    assert attempt.state is AttemptState.LOST and attempt.ended_at == 1005.0
    assert hub.study_view(study).gpu_hours == pytest.approx(5 / 3600)


def test_a_credit_budget_alone_is_refused_where_its_trials_cost_nothing(
    store: Store, clock: Clock
) -> None:
    free = Hub(store, clock=clock)  # CPU slots cost 0 by default
    free.put_bundle(DIGEST, b"bundle", b"k" * 32, "owner", b"s" * 64)
    with pytest.raises(InvalidInputError, match="budget.max_credits: got 5.0; is the study's "
                                                "only bound, but its trials cost nothing"):
        submit(free, make_spec(budget={"max_credits": 5}))
    assert store.list_studies() == []
    submit(free, make_spec(budget={"max_credits": 5, "max_trials": 2}))  # bounded otherwise
    submit(free, make_spec(budget={"max_credits": 5},
                           resources={"gpus": 1, "min_gpu_memory_gb": 1}))  # GPUs cost 1


def test_a_banned_owner_cannot_stop_its_study_or_read_it_that_way(hub: Hub) -> None:
    # before, StopStudy skipped the ban check and answered with the whole study
    hub.operator_key_id = "op"
    owner = "ab" * 16
    study = submit(hub, make_spec(), owner)
    hub.change_access("op", owner, "ban", "spam")
    with pytest.raises(PermissionDeniedError, match="is banned: spam"):
        hub.stop_study(study, owner)
    with pytest.raises(PermissionDeniedError, match="is banned: spam"):
        hub.check_reader(owner, study)


def test_an_overlong_access_reason_is_refused_and_changes_nothing(hub: Hub, store: Store) -> None:
    # before, a 100,000-character reason was stored and sent with every ListAccess
    hub.operator_key_id = "op"
    key = "cd" * 16
    with pytest.raises(InvalidInputError, match=r"^reason: got .*; must be text of at most 500"):
        hub.change_access("op", key, "ban", "x" * 100_000)
    assert store.get_access(key) is None and key not in hub.banned
    hub.change_access("op", key, "ban", "x" * 500)
    assert key in hub.banned


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": "a\nb\x1b[31mred"}, "name"),
    ({"resources": {"gpus": 0, "min_gpu_memory_gb": 8}}, "resources.min_gpu_memory_gb"),
])
def test_a_new_study_is_held_to_the_rules_stored_ones_predate(
        hub: Hub, store: Store, changes: dict[str, Any], field: str) -> None:
    # off the wire a spec is parsed as a stored one is (so old studies rebuild); a new one is
    # also checked at submission
    with pytest.raises(InvalidInputError, match=f"^{field}: got "):
        submit(hub, make_spec(**changes))
    assert store.list_studies() == []


@pytest.mark.parametrize("lease", [float("nan"), float("inf"), 0.5, 0.0])
def test_a_lease_no_heartbeat_can_keep_or_no_deadline_can_hold_is_refused(
        store: Store, lease: float) -> None:
    # before, nan passed `<= 0` and every lease then failed the store's NOT NULL constraint
    with pytest.raises(InvalidInputError, match="lease_seconds: got .*; must be a number of "
                       "seconds >= 1"):
        Hub(store, lease_seconds=lease)


def test_an_attempt_lost_across_a_restart_is_billed_to_its_last_sign_of_life(
        tmp_path: Path, clock: Clock) -> None:
    # before, its end was its lease deadline less the *new* lease: a restart (which moves every
    # deadline a lease on) or a shorter --lease-seconds billed the time the node was gone
    path = tmp_path / "c.db"
    store = Store(path)
    hub = Hub(store, clock=clock, lease_seconds=40)
    study = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    clock.now += 10
    hub.heartbeat("n1", node_pb2.Heartbeat(running_attempts=[a.attempt_id]))
    seen = clock.now
    clock.now += 5  # the node dies; then the coordinator, which comes back with a 2 s lease
    store.close()
    store = Store(path)
    again = Hub(store, clock=clock, lease_seconds=2)
    clock.now = seen + 41  # past the deadline the 40 s lease had set
    again.expire_leases()
    attempt = store.get_attempt(a.attempt_id)
    assert attempt.state is AttemptState.LOST and attempt.ended_at == seen
    assert again.hours_used(study, clock.now)[1] == pytest.approx(10 / 3600)  # slot-hours
    store.close()


def test_an_attempt_a_restarted_node_no_longer_runs_is_billed_to_its_last_sign_of_life(
        hub: Hub, store: Store, clock: Clock) -> None:
    # before, it was billed until the node came back, however long it had been gone
    submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    clock.now += 4
    hub.heartbeat("n1", node_pb2.Heartbeat(running_attempts=[a.attempt_id]))
    seen = clock.now
    clock.now += 7  # within the lease, the node restarts without it
    connect(hub, "n1")
    attempt = store.get_attempt(a.attempt_id)
    assert attempt.state is AttemptState.LOST and attempt.ended_at == seen


@pytest.mark.parametrize("name, gpu", [
    ("x\n0000000000000000\x1b[2J\x1b[31mRED", "A100"), ("n" * 129, "A100"),
    ("ok", "A100\x1b[2J"),
])
def test_a_node_name_or_gpu_text_that_would_reach_a_terminal_raw_is_refused(
        hub: Hub, store: Store, name: str, gpu: str) -> None:
    # before, a provider's name with line breaks and escapes forged lines in `coordinator nodes`
    inventory = node_pb2.Inventory(cpu_slots=1)
    inventory.gpus.add(uuid="GPU-1", name=gpu, memory_total_gb=8)
    with pytest.raises(InvalidInputError, match="must be printable text of at most"):
        hub.register_node("n1", b"p" * 32, name, inventory)
    with pytest.raises(NotFoundError):
        store.get_node("n1")


def test_a_heartbeat_is_when_a_node_was_last_seen(hub: Hub, store: Store, clock: Clock) -> None:
    # before, last_seen was the registration time however long the node stayed connected
    connect(hub, "n1")
    clock.now += 200
    hub.heartbeat("n1", node_pb2.Heartbeat())
    assert store.get_node("n1").last_seen == clock.now


@pytest.mark.parametrize("end", ["lost", "failed"])
def test_a_trial_told_to_stop_ends_pruned_when_its_attempt_is_lost_or_fails(
        store: Store, clock: Clock, end: str) -> None:
    # before, it was leased again and re-run, only to be told STOP once more (and after
    # max_attempts failed, its pruned result thrown away)
    hub = Hub(store, clock=clock, lease_seconds=10.0, max_attempts=3)
    study = submit(hub, make_spec(budget={"max_trials": 3},
                                  search={"searcher": "random", "scheduler": "asha", "seed": 7},
                                  fidelity={"min": 1, "max": 9, "eta": 3}))
    leased = connect(hub, "n1", cpu_slots=3)
    decisions = [report(hub, "n1", a.attempt_id, 1, 1, v)
                 for a, v in zip(leased, (0.1, 0.5, 0.9), strict=True)]
    assert decisions == ["continue", "stop", "stop"]
    stopped = leased[2]
    if end == "lost":
        again = connect(hub, "n1", cpu_slots=3)  # restarted, running nothing
    else:
        again = finish(hub, "n1", stopped.attempt_id, "failed", "node agent shut down")
    assert stopped.trial_id not in [a.trial_id for a in again]
    trial = store.get_trial(study, stopped.trial_id)
    assert (trial.state, trial.attempts, trial.step, trial.value) == (
        TrialState.PRUNED, 1, 1, 0.9)


def test_a_trial_a_limit_fails_before_it_ran_again_is_failed_in_the_tuner_too(
        hub: Hub, store: Store, clock: Clock) -> None:
    # before, the store said failed while the tuner (and a replay of the events) still had the
    # trial running
    study = submit(hub, make_spec(budget={"deadline": clock.now + 10}))
    [a] = connect(hub, "n1")
    clock.now += 5
    assert connect(hub, "n1", cpu_slots=0) == []  # back without the attempt, and no slot
    assert store.get_trial(study, a.trial_id).state is TrialState.PENDING
    runtime = hub.studies[study]
    clock.now += 10  # past the deadline: the sweep fails the pending trial
    hub.enforce_limits()
    assert store.get_trial(study, a.trial_id).state is TrialState.FAILED
    assert runtime.tuner.trials[a.trial_id].state == "failed"
    kinds = [kind for kind, number in store.conn.execute(
        "SELECT kind, trial_number FROM scheduler_events WHERE study_id = ? ORDER BY id",
        (study,)) if number == a.trial_id]
    assert kinds == ["ask", "fail"]


def test_an_attempt_that_ended_while_the_coordinator_was_away_is_billed_its_run_time(
        tmp_path: Path, clock: Clock) -> None:
    # before, it was billed until its node got its end through, after the restart
    path = tmp_path / "c.db"
    store = Store(path)
    hub = Hub(store, clock=clock, lease_seconds=10)
    submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    started = store.get_attempt(a.attempt_id).started_at
    clock.now += 5
    hub.heartbeat("n1", node_pb2.Heartbeat(running_attempts=[a.attempt_id]))
    store.close()  # the coordinator goes away; the child ends 8 s after its lease
    clock.now += 600
    store = Store(path)
    again = Hub(store, clock=clock, lease_seconds=10)
    hello = node_pb2.Hello(inventory=node_pb2.Inventory(cpu_slots=1),
                           running_attempts=[a.attempt_id])  # its end not yet acknowledged
    again.node_connected("n1", hello)
    again.finished("n1", node_pb2.AttemptFinished(attempt_id=a.attempt_id, outcome="completed",
                                                  wall_seconds=8.0))
    assert store.get_attempt(a.attempt_id).ended_at == started + 8.0
    store.close()


@pytest.mark.parametrize("seen, wall, expected", [
    (195.0, 8.0, 200.0),  # heard from within a lease: the moment its end arrives, as before
    (105.0, 8.0, 108.0),  # not for longer: the lease plus its run time
    (105.0, 2.0, 105.0),  # ... never before its last sign of life
    (105.0, 1e9, 200.0),  # ... nor after now
    (105.0, float("nan"), 200.0), (None, 8.0, 200.0),
])
def test_when_an_attempt_ended_for_the_ledger(seen: float | None, wall: float,
                                              expected: float) -> None:
    from coordinator.hub_state import finished_at
    from coordinator.models import Attempt

    attempt = Attempt(1, "s", 0, "n1", AttemptState.RUNNING, started_at=100.0, seen_at=seen)
    assert finished_at(attempt, wall, 200.0, 10.0) == expected
