"""The coordinator's core: studies, trials, attempts and leases, driven by events.

The hub is synchronous and single-threaded by contract: the server calls it from one dedicated
thread (see :mod:`coordinator.hub_thread`), so it needs no locks and never blocks the event
loop. Every method that changes state commits it to the store before it returns; a method's
return value (acknowledgements, assignments, stop orders) is what the server then sends, so
nothing is acknowledged before it is durable.

Messages to nodes are returned as an *outbox*: a list of ``(node_id, CoordinatorMessage)``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coordinator.hub_access import AccessMixin
from coordinator.hub_limits import LimitsMixin
from coordinator.hub_state import (
    NodeSession,
    Outbox,
    PermissionDeniedError,
    StudyRuntime,
    StudyView,
    ack_message,
    finished_at,
    gpu_usage,
    log,
    stop_message,
)
from coordinator.hub_verification import VerificationMixin
from coordinator.models import Attempt, AttemptState, Node, Study, StudyState, Trial, TrialState
from coordinator.repeated_failures import same_failure_elsewhere
from coordinator.scheduling import (
    DEFAULTS_VERSION,
    AskStatus,
    Decision,
    Tuner,
    build_tuner,
    check_available,
)
from coordinator.store import Store
from coordinator.verification import VerificationState, sampled
from tunefleet import serde
from tunefleet.envelope import SequenceGuard
from tunefleet.errors import InvalidInputError, NotFoundError, StateError, TunefleetError
from tunefleet.study import StudySpec, check_new, deadline_text
from tunefleet.v1 import common_pb2, node_pb2

MAX_STEP = 2**62
MAX_CPU_SLOTS = 1024
MAX_GPUS = 64
OUTCOMES = ("completed", "failed", "stopped")
MAX_NAME_CHARS = 128  # a node's name (each text of its inventory: twice this)
RETRY_NODES_LOOKED_AT = 32  # other nodes a failed trial's retry is offered to, at most
MIN_LEASE_SECONDS = 1.0  # an agent heartbeats every quarter lease, every 0.2 s at most

__all__ = ["MIN_LEASE_SECONDS", "check_inventory", "Hub", "Outbox", "StudyView", "NodeSession",
           "PermissionDeniedError", "NodeEventItem"]

# A verified event of a node's session: node id, envelope seq, the event, the raw envelope.
NodeEventItem = tuple[str, int, node_pb2.NodeEvent, bytes]


class Hub(AccessMixin, VerificationMixin, LimitsMixin):
    """Owns the scheduling state of every running study and the leases of every attempt."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        operator_key_id: str | None = None,
        open_admission: bool = False,
        price_gpu_hour: float = 1.0,
        price_slot_hour: float = 0.0,
    ) -> None:
        """``price_gpu_hour`` and ``price_slot_hour``: the credits an attempt leased from now on
        costs its researcher, and earns its provider, per GPU-hour and per hour held."""
        for name, price in (("price_gpu_hour", price_gpu_hour),
                            ("price_slot_hour", price_slot_hour)):
            if not (math.isfinite(price) and price >= 0):
                raise InvalidInputError(name, price, "must be a number of credits >= 0")
        if not (math.isfinite(lease_seconds) and lease_seconds >= MIN_LEASE_SECONDS):
            raise InvalidInputError("lease_seconds", lease_seconds,
                                    f"must be a number of seconds >= {MIN_LEASE_SECONDS:g}")
        if max_attempts < 1:
            raise InvalidInputError("max_attempts", max_attempts, "must be >= 1")
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.operator_key_id = operator_key_id
        self.open_admission = open_admission
        self.price_gpu_hour, self.price_slot_hour = price_gpu_hour, price_slot_hour
        self.sessions: dict[str, NodeSession] = {}
        self.studies: dict[str, StudyRuntime] = {}
        self.refused_reports = 0
        self._wake = False  # a verification was queued: offer it to every node
        self.guard = SequenceGuard(load=store.last_seq, save=store.save_seq)
        self.banned: set[str] = {r["key_id"] for r in store.list_access() if r["state"] == "banned"}
        # (node, study) pairs whose bundle the node declined: never offered again.
        self.declined: set[tuple[str, str]] = self._stored_declines()
        for study in store.list_studies(StudyState.RUNNING):
            self.studies[study.id] = self._rebuild(study)
        # After a restart, give every node one full lease to reconnect before its attempts
        # count as lost: the coordinator was away, not the nodes.
        with store.atomic():
            store.conn.execute(
                "UPDATE attempts SET lease_deadline = MAX(lease_deadline, ?) WHERE state = 'running'",
                (self.clock() + lease_seconds,),
            )

    # scheduling state ----------------------------------------------------------------------

    def _rebuild(self, study: Study) -> StudyRuntime:
        """Build a study's tuner from its seed and replay its stored events."""
        message = common_pb2.StudySpec.FromString(study.spec)
        spec, _ = serde.spec_from_proto(message)
        tuner = build_tuner(spec, study.scheduling_defaults)  # the defaults it was submitted with
        for kind, trial, step, value in self.store.events(study.id):
            if kind == "ask":
                suggestion = tuner.ask()
                if suggestion.trial_id != trial:
                    raise StateError(
                        f"replay of study {study.id} diverged: expected trial {trial}, "
                        f"got {suggestion}"
                    )
                stored = self.store.get_trial(study.id, trial).params
                if suggestion.params != stored:  # the searcher's defaults changed since
                    log.warning("study %s trial %d: the replay suggests other parameters than "
                                "the trial ran with; the stored ones are kept", study.id, trial)
                    tuner.adopt(trial, stored)
            elif kind == "report":
                tuner.tell_report(trial, int(step or 0), float("nan") if value is None else value)
            elif kind == "complete":
                tuner.tell_complete(trial)
            elif kind == "fail":
                tuner.tell_failed(trial)
        return StudyRuntime(study, spec, tuner)

    @contextmanager
    def _unit(self, savepoint: bool = False) -> Iterator[None]:
        """A unit of work on the store that memory follows: what it rolls back, memory forgets.

        The outermost unit is a transaction; ``savepoint=True`` opens a savepoint inside the
        enclosing one (one node event of a batch), and any other nested unit joins its
        enclosing unit. When a unit rolls back, every study whose tuner changed in it, or that
        left or entered :attr:`studies`, is rebuilt from the store, or dropped where the store
        no longer has it running; the replay guard's and the declined bundles' memory is read
        again if the unit changed it. An exception raised inside a unit must not be swallowed
        before it leaves that unit, except by the caller of a ``savepoint=True`` unit.
        """
        if self.store.in_transaction and not savepoint:
            yield
            return
        mark, before = Tuner.stamp_now(), self.studies.copy()
        accepted, declined = self.guard.accepted, len(self.declined)
        try:
            with self.store.savepoint() if self.store.in_transaction else self.store.atomic():
                yield
        except BaseException:
            if self.guard.accepted != accepted:
                self.guard.forget()
            if len(self.declined) != declined:
                self.declined = self._stored_declines()
            self._resync(mark, before)
            raise

    def _stored_declines(self) -> set[tuple[str, str]]:
        return {(r["node_id"], r["study_id"]) for r in self.store.db.query(
            "SELECT DISTINCT node_id, study_id FROM attempts WHERE error LIKE 'declined%'")}

    def _resync(self, mark: int, before: dict[str, StudyRuntime]) -> None:
        """After a rollback: the studies in memory as the store has them (see :meth:`_unit`)."""
        for study_id in set(before) | set(self.studies):
            runtime = self.studies.get(study_id)
            if runtime is not None and runtime is before.get(study_id) and (
                runtime.tuner.told <= mark
            ):
                continue
            try:
                study = self.store.get_study(study_id)
                if study.state is StudyState.RUNNING:
                    self.studies[study_id] = self._rebuild(study)
                    log.warning("study %s: scheduler rebuilt after a rolled-back change",
                                study_id)
                else:
                    self.studies.pop(study_id, None)
            except NotFoundError:
                self.studies.pop(study_id, None)
            except Exception:  # keep the original error; this study waits for a restart
                log.exception("study %s: could not rebuild its scheduler; it is not scheduled "
                              "until the coordinator restarts", study_id)
                self.studies.pop(study_id, None)

    def _runtime(self, study_id: str) -> StudyRuntime:
        runtime = self.studies.get(study_id)
        if runtime is None:
            raise NotFoundError(f"study {study_id!r} is not running")
        return runtime

    # bundles and studies -------------------------------------------------------------------

    def put_bundle(
        self, digest: str, data: bytes, publisher_key: bytes, key_id: str, signature: bytes
    ) -> bool:
        """Store a verified bundle; returns whether it was already present. The same bytes
        signed by another key are refused (:class:`StateError`): a study runs only its own
        researcher's bundle, and only a manifest from before manifests named their publisher
        can be the same for two researchers."""
        publisher = self.store.bundle_publisher(digest)
        if publisher is not None:
            if publisher != key_id:
                raise StateError(
                    f"bundle {digest[:12]} is stored already, signed by another researcher: "
                    "update tunefleet (its bundles name their publisher, so yours differ) and "
                    "upload it again")
            return True
        with self.store.atomic():
            self.store.put_bundle(digest, data, publisher_key, key_id, signature, self.clock())
        return False

    def get_bundle(self, digest: str, requester: str) -> tuple[bytes, bytes, bytes]:
        """``(data, publisher_key, signature)`` of a stored bundle, for a registered node that
        is not banned, the bundle's publisher, an owner of a study that uses it, or the operator.
        """
        row = self.store.get_bundle(digest)
        allowed = requester in (row["publisher_key_id"], self.operator_key_id)
        if not allowed:
            try:
                self.store.get_node(requester)
                self.check_node(requester)
                allowed = True
            except NotFoundError:
                allowed = any(s.owner_key_id == requester and s.bundle_digest == digest
                              for s in self.store.list_studies())
        if not allowed:
            raise PermissionDeniedError(f"key {requester} may not download bundle {digest[:12]}")
        return row["data"], row["publisher_key"], row["signature"]

    def submit_study(
        self, spec: StudySpec, digest: str, spec_bytes: bytes, owner_key_id: str
    ) -> str:
        """Store a validated study and start scheduling it; returns its id."""
        check_new(spec)
        check_available(spec)
        now = self.clock()
        if spec.budget.deadline is not None and spec.budget.deadline <= now:
            raise InvalidInputError("budget.deadline", deadline_text(spec.budget.deadline),
                                    f"is past: the coordinator's clock says {deadline_text(now)}")
        b = spec.budget
        if b.max_credits is not None and b.max_trials is None and b.max_gpu_hours is None and (
                b.deadline is None and spec.search.searcher != "grid"):
            hourly = spec.resources.gpus * self.price_gpu_hour + self.price_slot_hour
            if hourly <= 0:
                raise InvalidInputError(
                    "budget.max_credits", b.max_credits,
                    f"is the study's only bound, but its trials cost nothing here ("
                    f"{self.price_gpu_hour:g} credits per GPU-hour, {self.price_slot_hour:g} "
                    "per slot-hour); add max_trials or a deadline",
                )
        publisher = self.store.bundle_publisher(digest)
        if publisher is None:
            raise InvalidInputError(
                "bundle_digest", digest, "must name an uploaded bundle; upload it first"
            )
        if publisher != owner_key_id:
            # The nodes check the bundle's signature against their trust in its publisher: a
            # study run with someone else's bundle would borrow that trust.
            raise PermissionDeniedError(
                f"bundle {digest[:12]} was signed by another key, not by {owner_key_id}: a "
                "study runs only a bundle its own researcher signed and uploaded"
            )
        study = Study(
            id=uuid.uuid4().hex[:12], name=spec.name, owner_key_id=owner_key_id,
            spec=spec_bytes, bundle_digest=digest, state=StudyState.RUNNING,
            created_at=now, scheduling_defaults=DEFAULTS_VERSION,
        )
        tuner = build_tuner(spec)
        with self.store.atomic():
            self.store.insert_study(study)
        self.studies[study.id] = StudyRuntime(study, spec, tuner)
        log.info("study %s (%s) submitted", study.id, spec.name)
        return study.id

    def study_view(self, study_id: str) -> StudyView:
        study = self.store.get_study(study_id)
        spec, _ = serde.spec_from_proto(common_pb2.StudySpec.FromString(study.spec))
        best = self._best(study, spec)
        verification = None if best is None else self.store.verification_of(study_id, best.number)
        gpu_hours, slot_hours, credits = self.hours_used(study_id, self.clock())
        attempts = [] if best is None else self.store.attempts_of_trial(study_id, best.number)
        counts = self.store.trial_counts(study_id)
        return StudyView(study, spec, counts, best, verification, gpu_hours, slot_hours, credits,
                         best_node=attempts[-1].node_id if attempts else "",
                         waiting_for=self._waiting_for(study_id, spec, counts))

    def _waiting_for(self, study_id: str, spec: StudySpec, counts: dict[TrialState, int]
                     ) -> str:
        """Why a running study runs nothing: no connected node could run its trials; "" when
        some trial runs or some node could (it is then only waiting for a free one)."""
        runtime = self.studies.get(study_id)
        if runtime is None or counts[TrialState.RUNNING]:
            return ""
        able = [n for n, s in self.sessions.items() if not s.draining
                and (n, study_id) not in self.declined and self._could_hold(runtime, s.inventory)]
        if able:
            return ""
        need = spec.resources
        what = (f"{need.gpus} GPU(s) with at least {need.min_gpu_memory_gb:g} GB each"
                if need.gpus else "a CPU slot")
        connected = len(self.sessions)
        return (f"no connected node can run its trials: they need {what}, and none of the "
                f"{connected} connected node(s) offers it (or takes the study)" if connected
                else f"no node is connected (its trials need {what})")

    def _best(self, study: Study, spec: StudySpec) -> Trial | None:
        best: Trial | None = None
        for trial in self.store.list_trials(study.id, TrialState.COMPLETED):
            if trial.value is None or not math.isfinite(trial.value):
                continue
            if best is None or spec.objective.mode.better(trial.value, best.value or 0.0):
                best = trial
        return best

    def list_studies(self, reader: str | None = None) -> list[StudyView]:
        """Every study (``reader=None`` or the operator), else the ones ``reader`` owns."""
        everything = reader is None or reader == self.operator_key_id
        return [self.study_view(s.id) for s in self.store.list_studies()
                if everything or s.owner_key_id == reader]

    def stop_study(self, study_id: str, key_id: str, reason: str = "stopped by its owner"
                   ) -> Outbox:
        """Stop a study at its owner's (or the operator's) request: no new trials, running ones
        are told to stop. A banned key is refused, as its reads are."""
        self._refuse_banned(key_id)
        study = self.owned_study(key_id, study_id)
        if study.state is not StudyState.RUNNING:
            return []
        now = self.clock()
        outbox: Outbox = []
        with self._unit():
            self.store.end_study(study_id, StudyState.STOPPED, now, reason)
            for trial in self.store.list_trials(study_id, TrialState.PENDING):
                trial.state, trial.error, trial.ended_at = (
                    TrialState.FAILED, "study stopped before it ran", now
                )
                self.store.update_trial(trial)
            for attempt in self.store.running_attempts():
                if attempt.study_id == study_id:
                    outbox.append((attempt.node_id, stop_message(attempt.id, "study stopped")))
            self.studies.pop(study_id, None)
        return outbox

    # nodes ---------------------------------------------------------------------------------

    def register_node(
        self, node_id: str, public_key: bytes, name: str, inventory: node_pb2.Inventory
    ) -> None:
        self.check_node(node_id)
        _check_text("name", name, MAX_NAME_CHARS)  # operators' terminals show it
        check_inventory(inventory)
        now = self.clock()
        with self.store.atomic():
            try:
                registered = self.store.get_node(node_id).registered_at
            except NotFoundError:
                registered = now
            self.store.upsert_node(
                Node(node_id, public_key, name or node_id[:8], inventory.SerializeToString(),
                     registered, now)
            )

    def node_connected(self, node_id: str, hello: node_pb2.Hello) -> Outbox:
        """A node opened its session; reconcile what it runs with what the store says."""
        self.store.get_node(node_id)
        self.check_node(node_id)
        check_inventory(hello.inventory)
        self.sessions[node_id] = NodeSession(node_id, hello.inventory, hello.draining)
        outbox = self._reconcile(node_id, list(hello.running_attempts), forget_missing=True)
        if self._wake:  # it lost attempts: their retries may belong on other nodes
            self._wake = False
            return outbox + self.assign_all()
        return outbox + self.assign(node_id)

    def node_disconnected(self, node_id: str) -> None:
        """The session closed. Its attempts keep their leases until they expire."""
        self.sessions.pop(node_id, None)

    def heartbeat(self, node_id: str, beat: node_pb2.Heartbeat) -> Outbox:
        session = self.sessions.get(node_id)
        if session is not None:
            session.draining = beat.draining
        return self._reconcile(node_id, list(beat.running_attempts), forget_missing=False)

    def _reconcile(self, node_id: str, running: list[int], forget_missing: bool) -> Outbox:
        """Extend the leases of attempts the node runs; stop those it should not run.

        With ``forget_missing`` (a fresh session), attempts the store has running on this node
        but the node does not list are lost now rather than at lease expiry.
        """
        now = self.clock()
        outbox: Outbox = []
        mine = {a.id: a for a in self.store.running_attempts(node_id)}
        with self._unit():
            self.store.node_seen(node_id, now)
            # a new session's list holds attempts whose end is on its way too: only heartbeats
            # and reports tell that one still runs
            self.store.extend_leases(node_id, [a for a in running if a in mine],
                                     now + self.lease_seconds, None if forget_missing else now)
            for attempt_id in running:
                if attempt_id not in mine:
                    outbox.append((node_id, stop_message(attempt_id, "attempt is no longer leased")))
                    continue
                runtime = self.studies.get(mine[attempt_id].study_id)
                if runtime is not None and runtime.limit_reason is not None:  # a lost stop, again
                    outbox.append((node_id, stop_message(attempt_id, runtime.limit_reason)))
            if forget_missing:
                for attempt_id, attempt in mine.items():
                    if attempt_id not in running:
                        outbox += self._lose(attempt, "the node restarted without it", now,
                                             held_until=attempt.seen_at)
                        self._wake = True
        return outbox

    # leases --------------------------------------------------------------------------------

    def expire_leases(self) -> Outbox:
        """Mark attempts whose lease ran out LOST and requeue their trials."""
        now = self.clock()
        outbox: Outbox = []
        expired = [a for a in self.store.running_attempts() if a.lease_deadline < now]
        if not expired:
            return outbox
        with self._unit():
            for attempt in expired:  # held (and billed) until its last sign of life
                seen = attempt.seen_at  # not the deadline less a lease: restarts move it
                outbox += self._lose(attempt, "lease expired", now, held_until=(
                    attempt.lease_deadline - self.lease_seconds if seen is None else seen))
        for node_id in list(self.sessions):
            outbox += self.assign(node_id)
        return outbox

    def _lose(self, attempt: Attempt, reason: str, now: float,
              held_until: float | None = None) -> Outbox:
        """``held_until``: when the attempt last showed life (its end, for the ledger)."""
        ended = now if held_until is None else max(attempt.started_at, min(now, held_until))
        attempt.state, attempt.ended_at, attempt.error = AttemptState.LOST, ended, reason
        self.store.update_attempt(attempt)
        log.warning("attempt %d on node %s lost: %s", attempt.id, attempt.node_id[:8], reason)
        if attempt.purpose == "verify":
            self._verification_failed(attempt, now)
            runtime = self.studies.get(attempt.study_id)
            if runtime is not None:
                self._maybe_complete(runtime, now)
        else:
            self._retry_or_fail(attempt, f"attempt {attempt.id} lost ({reason})", now)
        return [(attempt.node_id, stop_message(attempt.id, f"attempt lost: {reason}"))]

    def _retry_or_fail(self, attempt: Attempt, why: str, now: float) -> None:
        """Put the attempt's trial back to pending, or fail it: its study has ended, it has had
        ``max_attempts`` attempts, or it failed the same way on two nodes."""
        trial = self.store.get_trial(attempt.study_id, attempt.trial_number)
        runtime = self.studies.get(attempt.study_id)
        record = None if runtime is None else runtime.tuner.trials.get(trial.number)
        if runtime is not None and record is not None and record.state == "stopping":
            # told to stop already: it ends pruned with its last value, never runs again
            trial.state, trial.ended_at, trial.error = TrialState.PRUNED, now, None
            self.store.update_trial(trial)
            runtime.tuner.tell_complete(trial.number)
            self.store.append_event(trial.study_id, "complete", trial.number)
            self._maybe_complete(runtime, now)
            return
        twin = None
        if attempt.state is AttemptState.FAILED:
            twin = same_failure_elsewhere(
                attempt, self.store.attempts_of_trial(attempt.study_id, attempt.trial_number))
        if runtime is not None and trial.attempts < self.max_attempts and twin is None:
            trial.state, trial.error = TrialState.PENDING, why
            self.store.update_trial(trial)
            return
        trial.state, trial.ended_at = TrialState.FAILED, now
        if runtime is None:
            trial.error = why
        elif twin is not None:
            trial.error = (f"failed the same way on nodes {twin.node_id[:8]} and "
                           f"{attempt.node_id[:8]}, so it was not tried again: {why}")
        else:
            trial.error = f"gave up after {trial.attempts} attempts: {why}"
        self.store.update_trial(trial)
        if runtime is not None:
            runtime.tuner.tell_failed(trial.number)
            self.store.append_event(trial.study_id, "fail", trial.number)
            self._maybe_complete(runtime, now)

    def _fail_without_result(self, runtime: StudyRuntime, attempt: Attempt, trial: Trial,
                             now: float) -> None:
        """End a trial whose code exited cleanly without ever reporting the objective metric:
        failed, naming what it reported, and not retried (its code would do the same again)."""
        metric = runtime.spec.objective.metric
        names = sorted({name for report in self.store.attempt_reports(attempt.id, 0, 100)
                        for name in report["metrics"]})
        said = f"it reported {', '.join(names)}" if names else "it reported nothing"
        why = (f"ended without reporting the objective metric {metric!r} ({said}); [objective] "
               "metric must be a name the training code passes to trial.report")
        attempt.state, attempt.error = AttemptState.FAILED, why
        self.store.update_attempt(attempt)
        trial.state, trial.ended_at, trial.error = TrialState.FAILED, now, why
        self.store.update_trial(trial)
        runtime.tuner.tell_failed(trial.number)
        self.store.append_event(trial.study_id, "fail", trial.number)

    # assignment ----------------------------------------------------------------------------

    def assign_all(self) -> Outbox:
        outbox: Outbox = []
        for node_id in list(self.sessions):
            outbox += self.assign(node_id)
        return outbox

    def assign(self, node_id: str) -> Outbox:
        """Lease work to every free GPU and CPU slot of a node that some study can use."""
        session = self.sessions.get(node_id)
        if session is None or session.draining:
            return []
        free_gpus, free_cpu = self._free(node_id, session)
        outbox: Outbox = []
        # oldest study first, but a study whose failed trial waits for a node other than the
        # one it failed on is served first, so that its retry is not starved by older studies
        for runtime in sorted(self.studies.values(), key=lambda r: (
                not self._retry_waits_for(r, node_id), r.study.created_at)):
            if (node_id, runtime.study.id) in self.declined:
                continue
            need = runtime.spec.resources
            if self._limited(runtime):
                continue  # ending, or about to: the sweep tells its running attempts to stop
            while True:
                if need.gpus > 0:
                    fit = [g for g in free_gpus if g.memory_total_gb >= need.min_gpu_memory_gb]
                    if len(fit) < need.gpus:
                        break
                    gpus = fit[: need.gpus]
                elif free_cpu <= 0:
                    break
                else:
                    gpus = []
                message = self._lease_verification(runtime, node_id, [g.uuid for g in gpus])
                if message is None:
                    message = self._lease(runtime, node_id, [g.uuid for g in gpus])
                if message is None:
                    break
                outbox.append((node_id, message))
                if gpus:
                    free_gpus = [g for g in free_gpus if g not in gpus]
                else:
                    free_cpu -= 1
        return outbox

    def _lease(
        self, runtime: StudyRuntime, node_id: str, gpu_uuids: list[str]
    ) -> node_pb2.CoordinatorMessage | None:
        """Start an attempt of a pending trial, or of a new trial the tuner suggests.

        A pending trial that failed on this node goes to an idle node that has not failed it
        (:meth:`_idle_elsewhere`). Where such nodes exist but are busy, this node takes a new
        suggestion instead and the retry waits for one of them; it runs here only when the
        tuner has nothing new (so a study never waits on a retry it could run)."""
        study_id = runtime.study.id
        now = self.clock()
        waiting: Trial | None = None
        deferred: Trial | None = None
        for pending in self.store.list_trials(study_id, TrialState.PENDING):
            failed_on = self._failed_on(pending)
            if node_id not in failed_on:
                waiting = pending
                break
            others = self._retry_candidates(pending, failed_on)
            if self._with_room(runtime, others) is not None:
                continue  # offered to that idle node
            if any(self._could_hold(runtime, self.sessions[n].inventory) for n in others):
                deferred = deferred or pending
            else:  # no other node could ever take it: retried here
                waiting = pending
                break
        with self._unit():  # a suggestion the store does not keep is forgotten with it
            suggestion = None if waiting is not None else runtime.tuner.ask()
            if suggestion is None or suggestion.status is not AskStatus.READY:
                trial = waiting or deferred  # the retry runs here rather than wait
                if trial is None:
                    if suggestion is not None and suggestion.status is AskStatus.EXHAUSTED:
                        self._maybe_complete(runtime, now)
                    return None
            else:
                if suggestion.trial_id is None or suggestion.params is None:
                    raise StateError("tuner returned READY without a trial")
                trial = Trial(study_id, suggestion.trial_id, suggestion.params,
                              TrialState.PENDING, created_at=now)
                self.store.insert_trial(trial)
                self.store.append_event(study_id, "ask", trial.number)
            trial.state, trial.attempts = TrialState.RUNNING, trial.attempts + 1
            self.store.update_trial(trial)
            attempt = Attempt(0, study_id, trial.number, node_id, AttemptState.RUNNING,
                              gpu_uuids, now + self.lease_seconds, now,
                              price_gpu_hour=self.price_gpu_hour,
                              price_slot_hour=self.price_slot_hour)
            self.store.insert_attempt(attempt)
        log.info("trial %s/%d attempt %d -> node %s", study_id, trial.number, attempt.id,
                 node_id[:8])
        return self._assignment(runtime, attempt, trial)

    def _retry_waits_for(self, runtime: StudyRuntime, node_id: str) -> bool:
        """Whether a pending trial of the study failed on some node, but not on ``node_id``."""
        return any(failed and node_id not in failed for failed in (
            self._failed_on(t) for t in self.store.list_trials(runtime.study.id,
                                                               TrialState.PENDING)))

    def _failed_on(self, trial: Trial) -> set[str]:
        """The nodes an attempt of ``trial`` failed on."""
        if trial.attempts == 0:
            return set()
        return {a.node_id for a in self.store.attempts_of_trial(trial.study_id, trial.number)
                if a.state is AttemptState.FAILED}

    def _retry_candidates(self, trial: Trial, failed_on: set[str]) -> list[str]:
        """Connected nodes, not draining, that have not failed ``trial`` nor declined its study
        (the first :data:`RETRY_NODES_LOOKED_AT`)."""
        return [n for n, s in self.sessions.items() if n not in failed_on
                and not s.draining and (n, trial.study_id) not in self.declined
                ][:RETRY_NODES_LOOKED_AT]

    @staticmethod
    def _could_hold(runtime: StudyRuntime, inventory: node_pb2.Inventory) -> bool:
        """Whether a node of ``inventory`` runs one of the study's trials when it is free."""
        return _fits(runtime, list(inventory.gpus), inventory.cpu_slots)

    def _with_room(self, runtime: StudyRuntime, nodes: list[str]) -> str | None:
        """The first of ``nodes`` with room for one of the study's trials now."""
        return next((node for node in nodes
                     if _fits(runtime, *self._free(node, self.sessions[node]))), None)

    def _idle_elsewhere(self, runtime: StudyRuntime, trial: Trial, node_id: str) -> str | None:
        """For a pending trial that failed on ``node_id``: a connected node, not draining, that
        has not failed it and has room for it now (among the first
        :data:`RETRY_NODES_LOOKED_AT` such nodes), where the retry should go instead. A failure
        may be the node's; on another node the trial either passes or shows the failure its
        own (see :mod:`coordinator.repeated_failures`). None: no such node now."""
        failed_on = self._failed_on(trial)
        if node_id not in failed_on:
            return None
        return self._with_room(runtime, self._retry_candidates(trial, failed_on))

    def _free(self, node_id: str, session: NodeSession) -> tuple[list[node_pb2.Gpu], int]:
        """The node's GPUs no running attempt holds, and its CPU slots none holds."""
        running = self.store.running_attempts(node_id)
        busy = {uuid_ for a in running for uuid_ in a.gpu_uuids}
        free_gpus = [g for g in session.inventory.gpus if g.uuid not in busy]
        return free_gpus, session.inventory.cpu_slots - sum(1 for a in running if not a.gpu_uuids)

    def _assignment(self, runtime: StudyRuntime, attempt: Attempt, trial: Trial
                    ) -> node_pb2.CoordinatorMessage:
        spec = runtime.spec
        message = node_pb2.CoordinatorMessage(
            assignment=node_pb2.Assignment(
                attempt_id=attempt.id, study_id=runtime.study.id, trial_id=trial.number,
                bundle_digest=runtime.study.bundle_digest, entrypoint=spec.entrypoint,
                fidelity_max=spec.fidelity.max, gpu_uuids=attempt.gpu_uuids,
                lease_seconds=self.lease_seconds, metric=spec.objective.metric,
            )
        )
        serde.params_to_proto(trial.params, message.assignment.params)
        return message

    def _maybe_complete(self, runtime: StudyRuntime, now: float) -> None:
        """End the study if nothing of it is left to run (once: an ended study is no longer
        among ``self.studies``, though a caller may still hold its runtime)."""
        if self.studies.get(runtime.study.id) is not runtime:
            return
        if not runtime.tuner.exhausted and runtime.limit_reason is None:
            return
        counts = self.store.trial_counts(runtime.study.id)
        if counts[TrialState.RUNNING] or counts[TrialState.PENDING]:
            return
        if runtime.limit_reason is not None:  # no re-run of the best: it would spend past it
            if self.store.running_count(runtime.study.id):
                return  # a stopped re-run has not ended yet
            self.store.end_study(runtime.study.id, StudyState.COMPLETED, now, runtime.limit_reason)
            self.studies.pop(runtime.study.id, None)
            log.info("study %s completed: %s", runtime.study.id, runtime.limit_reason)
            return
        open_states = (VerificationState.PENDING.value, VerificationState.RUNNING.value)
        waiting = [v for v in self.store.verifications(runtime.study.id)
                   if v["state"] in open_states]
        if runtime.spec.verification.best:
            best = self._best(runtime.study, runtime.spec)
            if best is not None and self.store.verification_of(best.study_id, best.number) is None:
                original = [a for a in self.store.attempts_of_trial(best.study_id, best.number)
                            if a.state is AttemptState.COMPLETED][-1:]
                others = self._verifiers(runtime.study.id,
                                         original[0].node_id if original else "")
                if others and self._queue_verification(runtime, best, "best trial", now):
                    self._wake = True
                    return
                if not others and self._queue_verification(runtime, best, "best trial", now):
                    # said, not left blank: researchers see "no other node could re-run it"
                    row = self.store.verification_of(best.study_id, best.number)
                    if row is not None:
                        self.store.update_verification(
                            row["id"], state=VerificationState.FAILED.value, ended_at=now)
        if any(v["state"] == VerificationState.RUNNING.value for v in waiting):
            return  # a node runs one (perhaps while it reconnects): it ends or its lease lapses
        if any(self._verifiers(runtime.study.id, v["original_node_id"]) for v in waiting):
            return  # another node can still run them
        for v in waiting:  # no other node is there: they end unverifiable
            self.store.update_verification(v["id"], state=VerificationState.FAILED.value,
                                           ended_at=now)
        limit = runtime.spec.budget.max_trials
        covered = runtime.spec.search.searcher == "grid" and (
            limit is None or sum(self.store.trial_counts(runtime.study.id).values()) < limit)
        self.store.end_study(runtime.study.id, StudyState.COMPLETED, now,
                             "every grid point tried" if covered else "budget spent")
        self.studies.pop(runtime.study.id, None)
        log.info("study %s completed", runtime.study.id)

    # reports and completions ---------------------------------------------------------------

    def _attempt_of(self, node_id: str, attempt_id: int) -> Attempt | None:
        try:
            attempt = self.store.get_attempt(attempt_id)
        except NotFoundError:
            return None
        return attempt if attempt.node_id == node_id else None

    def report(
        self, node_id: str, report: node_pb2.MetricReport, envelope: bytes
    ) -> Outbox:
        """Commit a verified metric report and answer with the scheduler's decision."""
        if not 0 <= report.step < MAX_STEP:
            raise InvalidInputError("report.step", report.step, f"must be in [0, {MAX_STEP})")
        attempt = self._attempt_of(node_id, report.attempt_id)
        if attempt is None:
            self.refused_reports += 1
            return [(node_id, stop_message(report.attempt_id, "no such attempt leased to this node"))]
        if attempt.state is not AttemptState.RUNNING:
            self.refused_reports += 1
            with self.store.atomic():
                attempt.late_reports += 1
                self.store.update_attempt(attempt)
            return [(node_id, stop_message(attempt.id, f"attempt is {attempt.state.value}"))]
        previous = self.store.get_report_decision(attempt.id, report.seq)
        if previous is not None:  # a resend: counted once, answered the same way
            return [(node_id, ack_message(attempt.id, report.seq, previous))]
        runtime = self.studies.get(attempt.study_id)
        metrics = dict(report.metrics)
        now = self.clock()
        decision = Decision.STOP.value if runtime is None else Decision.CONTINUE.value
        with self._unit():
            if runtime is not None and attempt.purpose == "trial":
                decision = self._feed(runtime, attempt, report.step, metrics)
            if runtime is not None and runtime.limit_reason is not None:
                decision = Decision.STOP.value  # its value counts; the study ends
            self.store.insert_report(attempt, report.seq, report.step, metrics, decision,
                                     envelope, now)
            self.store.extend_leases(node_id, [attempt.id], now + self.lease_seconds, now)
        return [(node_id, ack_message(attempt.id, report.seq, decision))]

    def _feed(self, runtime: StudyRuntime, attempt: Attempt, step: int,
              metrics: dict[str, float]) -> str:
        trial = self.store.get_trial(attempt.study_id, attempt.trial_number)
        record = runtime.tuner.trials[trial.number]
        if record.state == "stopping":
            return Decision.STOP.value
        if step > runtime.spec.fidelity.max:  # beyond the study's steps: it does not count
            return Decision.STOP.value
        value = metrics.get(runtime.spec.objective.metric)
        if value is None or (trial.step is not None and step <= trial.step):
            return Decision.CONTINUE.value
        decision = runtime.tuner.tell_report(trial.number, step, value)
        self.store.append_event(trial.study_id, "report", trial.number, step,
                                value if math.isfinite(value) else None)
        trial.step, trial.value = step, value
        self.store.update_trial(trial)
        return decision.value

    def node_events(self, batch: list[NodeEventItem]) -> list[Outbox | Exception]:
        """Handle a batch of verified node events in one transaction (group commit).

        Each event runs in its own savepoint: one that fails (a replay, say) is rolled back
        alone and its exception is returned in its place. Nothing in the returned outboxes may
        be sent before this method returns, that is before the batch is committed.
        """
        results: list[Outbox | Exception] = []
        with self._unit():  # if the commit fails, the schedulers are rebuilt from the store
            for node_id, seq, event, raw in batch:
                try:
                    with self._unit(savepoint=True):
                        results.append(self.node_event(node_id, seq, event, raw))
                except Exception as exc:  # that event alone fails; the batch goes on
                    if not isinstance(exc, TunefleetError):
                        log.exception("event of node %s failed", node_id[:8])
                    results.append(exc)
        return results

    def node_event(self, node_id: str, seq: int, event: node_pb2.NodeEvent, raw: bytes) -> Outbox:
        """One verified event of a node's session: refuse replays, then handle it."""
        self.check_node(node_id)
        self.accept(node_id, seq)
        kind = event.WhichOneof("kind")
        if kind == "report":
            return self.report(node_id, event.report, raw)
        if kind == "finished":
            return self.finished(node_id, event.finished)
        if kind == "heartbeat":
            return self.heartbeat(node_id, event.heartbeat)
        if kind == "declined":
            return self.declined_by_node(node_id, event.declined)
        raise InvalidInputError("kind", kind, f"must be one of {list(_node_event_kinds())}")

    def declined_by_node(self, node_id: str, declined: node_pb2.AttemptDeclined) -> Outbox:
        """The node's trust policy refused the bundle: record why, offer the trial elsewhere."""
        outbox: Outbox = [(node_id, node_pb2.CoordinatorMessage(
            finished_ack=node_pb2.FinishedAck(attempt_id=declined.attempt_id)))]
        attempt = self._attempt_of(node_id, declined.attempt_id)
        if attempt is None or attempt.state is not AttemptState.RUNNING:
            return outbox
        now = self.clock()
        reason = declined.reason[:2000] or "no reason given"
        with self._unit():
            attempt.state, attempt.ended_at = AttemptState.FAILED, now
            attempt.error = f"declined by node: {reason}"
            self.store.update_attempt(attempt)
            self.declined.add((node_id, attempt.study_id))
            if attempt.purpose == "verify":
                self._verification_failed(attempt, now)
                runtime = self.studies.get(attempt.study_id)
                if runtime is not None:
                    self._maybe_complete(runtime, now)
                return outbox + self.assign_all()
            trial = self.store.get_trial(attempt.study_id, attempt.trial_number)
            trial.error = f"node {node_id[:8]} declined the bundle: {reason}"
            if attempt.study_id in self.studies:
                trial.state, trial.attempts = TrialState.PENDING, max(0, trial.attempts - 1)
            else:  # the study ended meanwhile: nothing will run it again
                trial.state, trial.ended_at = TrialState.FAILED, now
            self.store.update_trial(trial)
        self.declined.add((node_id, attempt.study_id))
        log.warning("node %s declined study %s: %s", node_id[:8], attempt.study_id, reason)
        return outbox + self.assign_all()

    def finished(self, node_id: str, done: node_pb2.AttemptFinished) -> Outbox:
        """An attempt's child exited; end the attempt and its trial, then lease more work."""
        outbox: Outbox = [(node_id, node_pb2.CoordinatorMessage(
            finished_ack=node_pb2.FinishedAck(attempt_id=done.attempt_id)))]
        if done.outcome not in OUTCOMES:
            raise InvalidInputError("finished.outcome", done.outcome, f"must be one of {OUTCOMES}")
        attempt = self._attempt_of(node_id, done.attempt_id)
        if attempt is None or attempt.state is not AttemptState.RUNNING:
            return outbox + self.assign(node_id)
        now = self.clock()
        runtime = self.studies.get(attempt.study_id)
        if attempt.purpose == "verify":
            with self._unit():
                self._verification_finished(attempt, done, now)
                if runtime is not None:
                    self._maybe_complete(runtime, now)
            return outbox + self.assign(node_id)
        attempt.ended_at = finished_at(attempt, done.wall_seconds, now, self.lease_seconds)
        attempt.exit_code = done.exit_code
        attempt.error = done.error or None
        attempt.gpu_seconds, attempt.wall_seconds = done.gpu_seconds, done.wall_seconds
        attempt.gpu_utilization, attempt.gpu_memory_peak_gb = gpu_usage(done, attempt)
        other: str | None = None  # where a failed trial's retry goes first
        with self._unit():
            trial = self.store.get_trial(attempt.study_id, attempt.trial_number)
            if done.outcome == "failed":
                attempt.state = AttemptState.FAILED
                self.store.update_attempt(attempt)
                self._retry_or_fail(attempt, done.error or f"exit code {done.exit_code}", now)
                retry = self.store.get_trial(trial.study_id, trial.number)
                if runtime is not None and retry.state is TrialState.PENDING:
                    other = self._idle_elsewhere(runtime, retry, node_id)
            else:
                stopping = runtime is not None and (
                    runtime.tuner.trials[trial.number].state == "stopping"
                )
                # a trial that a limit stopped, and that ended cleanly short of max, is pruned
                cut = runtime is not None and runtime.limit_reason is not None and (
                    (trial.step or 0) < runtime.spec.fidelity.max)
                pruned = stopping or cut or done.outcome == "stopped" or runtime is None
                if runtime is not None and not pruned and trial.value is None:
                    self._fail_without_result(runtime, attempt, trial, now)
                    pruned = True  # nothing to verify
                else:
                    attempt.state = AttemptState.PRUNED if pruned else AttemptState.COMPLETED
                    self.store.update_attempt(attempt)
                    trial.state = TrialState.PRUNED if pruned else TrialState.COMPLETED
                    trial.ended_at, trial.error = now, None
                    self.store.update_trial(trial)
                if runtime is not None and trial.state is not TrialState.FAILED:
                    runtime.tuner.tell_complete(trial.number)
                    self.store.append_event(trial.study_id, "complete", trial.number)
                    if not pruned and runtime.limit_reason is None and sampled(
                            trial.study_id, trial.number, runtime.spec.verification.fraction):
                        self._wake = self._queue_verification(runtime, trial, "sample", now)
            if runtime is not None:
                self._maybe_complete(runtime, now)
        if other is not None:  # offered there first; this node then takes other work
            outbox += self.assign(other)
        if self._wake or (runtime is not None and runtime.tuner.max_running is not None):
            # a capped study may have held trials back from other nodes: offer them now
            self._wake = False
            return outbox + self.assign_all()
        return outbox + self.assign(node_id)



def _fits(runtime: StudyRuntime, gpus: list[node_pb2.Gpu], cpu_slots: int) -> bool:
    """Whether these GPUs (enough of them with the memory asked) or CPU slots run a trial of
    the study."""
    need = runtime.spec.resources
    if need.gpus:
        return sum(g.memory_total_gb >= need.min_gpu_memory_gb for g in gpus) >= need.gpus
    return cpu_slots > 0


def _node_event_kinds() -> tuple[str, ...]:
    return ("heartbeat", "report", "finished", "declined")


def _check_text(field: str, text: str, most: int) -> None:
    if len(text) > most or not text.isprintable():
        raise InvalidInputError(field, text, f"must be printable text of at most {most} "
                                "characters (no line breaks or escapes)")


def check_inventory(inventory: node_pb2.Inventory) -> None:
    """Raise :class:`InvalidInputError` for an inventory the hub does not take."""
    for key in ("driver_version", "cuda_version", "hostname", "platform"):
        _check_text(f"inventory.{key}", getattr(inventory, key), 2 * MAX_NAME_CHARS)
    for gpu in inventory.gpus:
        for key in ("uuid", "name", "compute_capability"):
            _check_text(f"inventory.gpus.{key}", getattr(gpu, key), 2 * MAX_NAME_CHARS)
    if not 0 <= inventory.cpu_slots <= MAX_CPU_SLOTS:
        raise InvalidInputError("inventory.cpu_slots", inventory.cpu_slots,
                                f"must be in [0, {MAX_CPU_SLOTS}]")
    if len(inventory.gpus) > MAX_GPUS:
        raise InvalidInputError("inventory.gpus", len(inventory.gpus), f"at most {MAX_GPUS}")
    if len({g.uuid for g in inventory.gpus}) != len(inventory.gpus):
        raise InvalidInputError("inventory.gpus", [g.uuid for g in inventory.gpus],
                                "GPU uuids must be distinct")
