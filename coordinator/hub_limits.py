"""A study's GPU-hour and credit budgets and its deadline: past one, no trial starts and
running ones stop.

``budget.max_gpu_hours`` counts the GPU time a study's attempts hold as the coordinator clocks
it (from the lease to the end, or to now for a running attempt, times its GPUs): a node cannot
understate it. ``budget.max_credits`` counts the same time at the prices each attempt was
leased at (the coordinator's ``--price-gpu-hour`` and ``--price-slot-hour``).
``budget.deadline`` is read from the coordinator's clock. The lease sweep
(:meth:`LimitsMixin.enforce_limits`, about once a second) and every lease check them; once a
limit is reached the study's pending trials fail, its running attempts (re-runs that verify
results too) are told to stop and end PRUNED with their last value, open verifications end
unverifiable, and the study completes with the limit as its reason. A study ended by a limit
does not re-run its best trial: that would spend past the limit.
"""

from __future__ import annotations

from coordinator.hub_state import HubState, Outbox, StudyRuntime, stop_message
from coordinator.models import TrialState
from coordinator.verification import VerificationState
from tunefleet.study import deadline_text

__all__ = ["LimitsMixin"]


class LimitsMixin(HubState):
    """Budgets besides the trial count. Part of :class:`coordinator.hub.Hub`."""

    def gpu_hours_used(self, study_id: str, now: float) -> float:
        """GPU-hours the study's attempts have held, running ones up to ``now``."""
        return self.hours_used(study_id, now)[0]

    def hours_used(self, study_id: str, now: float) -> tuple[float, float, float]:
        """``(GPU-hours, slot-hours, credits)`` the study's attempts have held, lease to end
        (running ones to ``now``), credits at the prices each attempt was leased at: the cost
        researchers see, and what the GPU-hour and credit budgets count."""
        gpu, slot, credits = self.store.attempt_usage(study_id, now)
        return gpu / 3600.0, slot / 3600.0, credits

    def _limit(self, runtime: StudyRuntime, now: float) -> str | None:
        """Why the study may start no more trials, or ``None`` while its limits allow it."""
        if runtime.limit_reason is not None:
            return runtime.limit_reason
        budget = runtime.spec.budget
        if budget.deadline is not None and now >= budget.deadline:
            return f"deadline {deadline_text(budget.deadline)} passed"
        if budget.max_gpu_hours is not None or budget.max_credits is not None:
            hours, _, credits = self.hours_used(runtime.study.id, now)
            if budget.max_gpu_hours is not None and hours >= budget.max_gpu_hours:
                return (f"max_gpu_hours reached ({hours:.3g} of {budget.max_gpu_hours:.3g} "
                        "GPU-hours held)")
            if budget.max_credits is not None and credits >= budget.max_credits:
                return (f"max_credits reached ({credits:.3g} of {budget.max_credits:.3g} "
                        "credits spent)")
        return None

    def _limited(self, runtime: StudyRuntime) -> bool:
        """Whether the study may start nothing more (ending by a limit, or past one now)."""
        if runtime.limit_reason is not None:
            return True
        if not runtime.spec.budget.watched:
            return False
        return self._limit(runtime, self.clock()) is not None

    def _end_by_limit(self, runtime: StudyRuntime, reason: str, now: float) -> Outbox:
        """Once per study: fail pending trials, stop running attempts, close verifications."""
        if runtime.limit_reason is not None:
            return []
        runtime.limit_reason = reason  # _maybe_complete reads it inside the unit
        study_id = runtime.study.id
        outbox: Outbox = []
        try:
            with self._unit():
                self._fail_pending(runtime, now)
                open_states = (VerificationState.PENDING.value, VerificationState.RUNNING.value)
                for row in self.store.verifications(study_id):
                    if row["state"] in open_states:
                        self.store.update_verification(
                            row["id"], state=VerificationState.FAILED.value, ended_at=now)
                for attempt in self.store.running_attempts():
                    if attempt.study_id == study_id:
                        outbox.append((attempt.node_id, stop_message(attempt.id, reason)))
                self._maybe_complete(runtime, now)
        except BaseException:
            runtime.limit_reason = None  # rolled back: the next sweep tries again
            raise
        return outbox

    def _fail_pending(self, runtime: StudyRuntime, now: float) -> None:
        """Fail the trials of an ending study that wait for a node (a stopped attempt whose
        trial came back, say): none runs past a limit."""
        for trial in self.store.list_trials(runtime.study.id, TrialState.PENDING):
            trial.state, trial.ended_at = TrialState.FAILED, now
            trial.error = f"not run: {runtime.limit_reason}"
            self.store.update_trial(trial)
            record = runtime.tuner.trials.get(trial.number)
            if record is not None and record.state in ("running", "stopping"):
                # the tuner and a replay of the events end it as the store does
                runtime.tuner.tell_failed(trial.number)
                self.store.append_event(trial.study_id, "fail", trial.number)

    def enforce_limits(self) -> Outbox:
        """The sweep's check of every running study's GPU-hour and credit budgets and deadline."""
        now = self.clock()
        outbox: Outbox = []
        for runtime in list(self.studies.values()):
            if not runtime.spec.budget.watched:
                continue
            if runtime.limit_reason is not None:  # ending: a trial that came back fails
                if self.store.trial_counts(runtime.study.id)[TrialState.PENDING]:
                    with self._unit():
                        self._fail_pending(runtime, now)
                        self._maybe_complete(runtime, now)
                continue
            reason = self._limit(runtime, now)
            if reason is not None:
                outbox += self._end_by_limit(runtime, reason, now)
        return outbox
