"""The median stopping rule: stop a trial whose best value trails the median of its peers."""

from __future__ import annotations

import bisect

import numpy as np

from coordinator.scheduling._base import (
    Decision,
    TrialScheduler,
    checked_fidelity,
    checked_seed,
    is_integer,
)
from tunefleet.errors import InvalidInputError
from tunefleet.study import Fidelity

__all__ = ["MedianStoppingScheduler"]


class MedianStoppingScheduler(TrialScheduler):
    """Stops a trial at ``step`` when its best value so far is worse than the median, over the
    other trials that reached ``step``, of their running averages up to ``step``.

    Contract: no trial stops before ``grace_step`` (default ``fidelity.min``), at or after
    ``fidelity.max``, or while fewer than ``min_trials`` other trials reached the step. A
    trial that failed has no valid result: its reports stop counting as a peer's. A report
    at a step at or beyond ``fidelity.max`` is never stopped (the coordinator never passes a
    step beyond ``max``: see :meth:`Tuner.tell_report
    <coordinator.scheduling.Tuner.tell_report>`).

    Arguments, checked when the scheduler is built (anything else raises
    :class:`~tunefleet.errors.InvalidInputError`): ``fidelity`` a
    :class:`~tunefleet.study.Fidelity` a study file could give (integers with
    ``1 <= min <= max <= MAX_STEP``, ``2 <= eta <= 1000``, as ASHA and Hyperband take);
    ``seed`` an integer in ``[0, 2**63)``; ``grace_step`` an integer >= 0 or ``None``;
    ``min_trials`` an integer >= 1.
    """

    def __init__(
        self, fidelity: Fidelity, seed: int = 0, grace_step: int | None = None,
        min_trials: int = 3,
    ) -> None:
        if not is_integer(min_trials) or min_trials < 1:
            raise InvalidInputError("min_trials", min_trials, "must be an integer >= 1")
        if grace_step is not None and (not is_integer(grace_step) or grace_step < 0):
            raise InvalidInputError("grace_step", grace_step,
                                    "must be an integer >= 0, or None: fidelity.min")
        self.fidelity = fidelity = checked_fidelity(fidelity)
        self.seed = checked_seed(seed)
        self.grace_step = fidelity.min if grace_step is None else int(grace_step)
        self.min_trials = min_trials
        self._steps: dict[int, list[int]] = {}
        self._sums: dict[int, list[float]] = {}  # prefix sums of values
        self._best: dict[int, float] = {}

    def _running_average(self, trial_id: int, step: int) -> float | None:
        steps = self._steps[trial_id]
        if not steps or steps[-1] < step:
            return None
        n = bisect.bisect_right(steps, step)
        if n == 0:  # this trial's first report came after ``step``: nothing to compare yet
            return None
        return self._sums[trial_id][n - 1] / n

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        steps = self._steps.setdefault(trial_id, [])
        sums = self._sums.setdefault(trial_id, [])
        steps.append(step)
        sums.append((sums[-1] if sums else 0.0) + value)
        best = min(self._best.get(trial_id, value), value)
        self._best[trial_id] = best
        if step < self.grace_step or step >= self.fidelity.max:
            return Decision.CONTINUE
        peers = [
            avg for other in self._steps if other != trial_id
            if (avg := self._running_average(other, step)) is not None
        ]
        if len(peers) < self.min_trials:
            return Decision.CONTINUE
        return Decision.STOP if best > float(np.median(peers)) else Decision.CONTINUE

    def on_fail(self, trial_id: int) -> None:
        for record in (self._steps, self._sums, self._best):
            record.pop(trial_id, None)
