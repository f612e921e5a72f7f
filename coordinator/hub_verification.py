"""The hub's redundant re-execution: re-runs of finished trials on other nodes.

See :mod:`coordinator.verification` for the policy (which trials, what agreement means).
"""

from __future__ import annotations

import math

from coordinator.hub_state import HubState, StudyRuntime, finished_at, gpu_usage, log
from coordinator.models import Attempt, AttemptState, Trial
from coordinator.verification import VerificationState, agrees, reputation_after
from tunefleet.v1 import node_pb2

__all__ = ["VerificationMixin"]


class VerificationMixin(HubState):
    """Leases, compares and records re-runs. Part of :class:`coordinator.hub.Hub`."""

    def _lease_verification(
        self, runtime: StudyRuntime, node_id: str, gpu_uuids: list[str]
    ) -> node_pb2.CoordinatorMessage | None:
        """Start a re-run of a finished trial on this node, if one waits for a different node."""
        study_id = runtime.study.id
        for row in self.store.verifications(study_id, VerificationState.PENDING.value):
            if row["original_node_id"] == node_id:
                continue
            now = self.clock()
            trial = self.store.get_trial(study_id, row["trial_number"])
            with self.store.atomic():
                attempt = Attempt(0, study_id, trial.number, node_id, AttemptState.RUNNING,
                                  gpu_uuids, now + self.lease_seconds, now, purpose="verify",
                                  price_gpu_hour=self.price_gpu_hour,
                                  price_slot_hour=self.price_slot_hour)
                self.store.insert_attempt(attempt)
                self.store.update_verification(
                    row["id"], state=VerificationState.RUNNING.value, attempt_id=attempt.id,
                    node_id=node_id, tries=row["tries"] + 1,
                )
            log.info("verifying %s/%d (from node %s) on node %s", study_id, trial.number,
                     row["original_node_id"][:8], node_id[:8])
            return self._assignment(runtime, attempt, trial)
        return None

    def _verifiers(self, study_id: str, original_node: str) -> list[str]:
        """Connected nodes that could re-run a trial of ``study_id`` first run elsewhere."""
        return [n for n, s in self.sessions.items()
                if n != original_node and not s.draining and (n, study_id) not in self.declined]

    def _queue_verification(self, runtime: StudyRuntime, trial: Trial, reason: str,
                            now: float) -> bool:
        attempts = [a for a in self.store.attempts_of_trial(trial.study_id, trial.number)
                    if a.state is AttemptState.COMPLETED]
        if not attempts or trial.value is None or not math.isfinite(trial.value):
            return False
        return self.store.add_verification(trial.study_id, trial.number, attempts[-1].node_id,
                                           trial.value, reason, now)

    def _verification_failed(self, attempt: Attempt, now: float) -> None:
        row = self.store.verification_by_attempt(attempt.id)
        if row is None or row["state"] != VerificationState.RUNNING.value:
            return
        state = (VerificationState.PENDING if row["tries"] < self.max_attempts
                 else VerificationState.FAILED)
        self.store.update_verification(row["id"], state=state.value,
                                       ended_at=None if state is VerificationState.PENDING else now)

    def _verification_finished(self, attempt: Attempt, done: node_pb2.AttemptFinished,
                               now: float) -> None:
        row = self.store.verification_by_attempt(attempt.id)
        runtime = self.studies.get(attempt.study_id)
        attempt.ended_at = finished_at(attempt, done.wall_seconds, now, self.lease_seconds)
        attempt.exit_code = done.exit_code
        attempt.error = done.error or None
        attempt.gpu_seconds, attempt.wall_seconds = done.gpu_seconds, done.wall_seconds
        attempt.gpu_utilization, attempt.gpu_memory_peak_gb = gpu_usage(done, attempt)
        value = None
        if runtime is not None:
            value = self.store.last_value(attempt.id, runtime.spec.objective.metric)
        if (done.outcome != "completed" or value is None or row is None or runtime is None
                or row["state"] != VerificationState.RUNNING.value  # closed meanwhile
                or runtime.limit_reason is not None):  # cut short by a limit: no comparison
            attempt.state = AttemptState.FAILED
            self.store.update_attempt(attempt)
            self._verification_failed(attempt, now)
            return
        attempt.state = AttemptState.COMPLETED
        self.store.update_attempt(attempt)
        agreed = agrees(row["original_value"], value, runtime.spec.verification.tolerance)
        state = VerificationState.VERIFIED if agreed else VerificationState.DISPUTED
        self.store.update_verification(row["id"], state=state.value, value=value, ended_at=now)
        node = self.store.get_node(row["original_node_id"])
        self.store.rate_node(node.id, reputation_after(node.reputation, agreed), not agreed)
        if not agreed:
            log.warning("node %s reported %s=%g for %s/%d; node %s measured %g: flagged",
                        node.id[:8], runtime.spec.objective.metric, row["original_value"],
                        attempt.study_id, attempt.trial_number, attempt.node_id[:8], value)

