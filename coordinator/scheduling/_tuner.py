"""The ask/tell tuner: a searcher and a trial scheduler composed, with a trial budget.

This is the public face of the scheduling core. A user can drive it directly::

    tuner = build_tuner(spec)          # or Tuner(RandomSearcher(space, 0), FIFOScheduler(), ...)
    s = tuner.ask()
    if s.status is AskStatus.READY:
        for step in range(1, 10):
            if tuner.tell_report(s.trial_id, step, loss(s.params, step)) is Decision.STOP:
                break
        tuner.tell_complete(s.trial_id)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.scheduling._base import (
    AskStatus,
    Config,
    Decision,
    Searcher,
    Suggestion,
    TrialScheduler,
    is_integer,
)
from coordinator.scheduling._grid import GridSearcher
from tunefleet.errors import InvalidInputError, StateError
from tunefleet.space import SearchSpace
from tunefleet.study import MAX_STEP, Mode

__all__ = ["Tuner", "TrialRecord"]

_stamps = [0]  # the process-wide change counter behind Tuner.told


@dataclass
class TrialRecord:
    """What the tuner knows of one trial. ``value`` is in the study's own sign."""

    trial_id: int
    params: Config
    step: int | None = None
    value: float | None = None
    state: str = "running"  # running | completed | pruned | failed


def _normalized(space: SearchSpace, config: Config) -> Config:
    """A valid ``config`` with each value in its parameter's own type, as the study file has
    it, in the space's order."""
    return {name: space[name].normalize(config[name]) for name in space}


class Tuner:
    """Composes a :class:`Searcher` and a :class:`TrialScheduler` under a trial budget.

    Contract: :meth:`ask` hands out consecutive trial ids, the first ones with the
    ``enqueue`` configurations in order (checked against the searcher's space; the searcher
    is told of each through :meth:`Searcher.adopt`; the scheduler treats them as any other
    trial, but never as a probe); ``mode`` is a :class:`~tunefleet.study.Mode` or its name,
    ``"min"`` or ``"max"``. :meth:`ask` returns EXHAUSTED once
    ``max_trials`` trials were handed out or the searcher has nothing left, WAIT when
    ``max_running`` trials are running (stopping ones included) or the scheduler holds new
    trials back. Reports of a trial must have increasing steps; a report of
    a trial that is not running, or a step that does not increase, raises
    :class:`~tunefleet.errors.StateError`, and a step that is not an integer in ``[0, MAX_STEP]`` or a value
    that is not a real number raises :class:`~tunefleet.errors.InvalidInputError`; either
    changes nothing. A non-finite value counts as the worst possible result and stops the
    trial. A trial that was told STOP is expected to end: a later report of it changes
    nothing and gets STOP again (as the coordinator answers a node that reports on).

    :attr:`told` is a stamp taken at the last call that changed the tuner's state (an ask that
    reached the searcher, adopt, reports, completions, failures), from one counter shared by
    every tuner in the process: a caller that keeps the events elsewhere marks
    :meth:`stamp_now` and later finds each tuner that changed since by ``told > mark``.
    """

    def __init__(
        self,
        searcher: Searcher,
        scheduler: TrialScheduler,
        mode: Mode = Mode.MIN,
        max_trials: int | None = None,
        max_running: int | None = None,
        enqueue: Sequence[Config] = (),
    ) -> None:
        if not isinstance(searcher, Searcher):
            raise InvalidInputError("searcher", searcher, "must be a Searcher (see build_tuner)")
        if not isinstance(scheduler, TrialScheduler):
            raise InvalidInputError("scheduler", scheduler,
                                    "must be a TrialScheduler (see build_tuner)")
        space = getattr(searcher, "space", None)
        if not isinstance(space, SearchSpace):  # a subclass that skipped Searcher.__init__
            raise InvalidInputError("searcher.space", space,
                                    "must be a SearchSpace (SearchSpace.from_mapping(...))")
        try:
            mode = Mode(mode)
        except (ValueError, TypeError):
            raise InvalidInputError("mode", mode, "must be 'min' or 'max'") from None
        for name, limit in (("max_running", max_running), ("max_trials", max_trials)):
            if limit is not None and (not is_integer(limit) or limit < 1):
                raise InvalidInputError(name, limit, "must be an integer >= 1 (or None: no limit)")
        if isinstance(enqueue, (Mapping, str, bytes)) or not isinstance(enqueue, Sequence):
            raise InvalidInputError("enqueue", enqueue,
                                    "must be a list of configurations, such as [{x = 0.5}]")
        if enqueue and isinstance(searcher, GridSearcher):
            raise InvalidInputError("enqueue", f"{len(enqueue)} configurations",
                                    "cannot be used with the grid searcher, which covers the "
                                    "space exactly once by itself")
        for i, config in enumerate(enqueue):
            searcher.space.validate_config(config, field=f"enqueue[{i}]")
        if max_trials is not None and len(enqueue) > max_trials:
            raise InvalidInputError("enqueue", f"{len(enqueue)} configurations",
                                    f"must be at most max_trials ({max_trials})")
        self.enqueue = tuple(_normalized(searcher.space, c) for c in enqueue)
        self.searcher = searcher
        self.scheduler = scheduler
        self.mode = mode
        self.max_trials = max_trials
        self.max_running = max_running
        self._running_count = 0
        self.told = 0
        self.trials: dict[int, TrialRecord] = {}
        self._exhausted = False

    @staticmethod
    def stamp_now() -> int:
        """The latest stamp any tuner in this process took (see :attr:`told`)."""
        return _stamps[0]

    def _touch(self) -> None:
        _stamps[0] += 1
        self.told = _stamps[0]

    def _sign(self, value: float) -> float:
        if not math.isfinite(value):
            return math.inf
        return value if self.mode is Mode.MIN else -value

    def ask(self) -> Suggestion:
        """Return the next trial to start, or WAIT, or EXHAUSTED."""
        if self.exhausted:
            return Suggestion(AskStatus.EXHAUSTED)
        if self.max_running is not None and self._running_count >= self.max_running:
            return Suggestion(AskStatus.WAIT)
        if not self.scheduler.can_start():
            return Suggestion(AskStatus.WAIT)
        trial_id = len(self.trials)
        self._touch()
        params: Config | None
        if trial_id < len(self.enqueue):  # the searcher learns of it as of its own suggestion;
            params = self.enqueue[trial_id]  # never a probe: a chosen point is no unbiased one
            self.searcher.adopt(trial_id, params)
        elif self.scheduler.wants_probe(trial_id):
            params = self.searcher.explore(trial_id)
        else:
            params = self.searcher.suggest(trial_id)
        if params is None:
            self._exhausted = True
            return Suggestion(AskStatus.EXHAUSTED)
        self.trials[trial_id] = TrialRecord(trial_id, dict(params))
        self._running_count += 1
        self.scheduler.on_add(trial_id)
        return Suggestion(AskStatus.READY, trial_id, dict(params))

    def adopt(self, trial_id: int, params: Config) -> None:
        """Record that the running ``trial_id`` runs ``params`` (see :meth:`Searcher.adopt`),
        before its first report. Params outside the space raise
        :class:`~tunefleet.errors.InvalidInputError`, a trial that has reported raises
        :class:`~tunefleet.errors.StateError`; either changes nothing."""
        record = self._running(trial_id)
        if record.step is not None:
            raise StateError(f"trial {trial_id} has reported already: its configuration "
                             "can only be adopted before its first report")
        self.searcher.space.validate_config(params, field="params")
        params = _normalized(self.searcher.space, params)
        self._touch()
        record.params = dict(params)
        self.searcher.adopt(trial_id, params)

    def _running(self, trial_id: int) -> TrialRecord:
        if not is_integer(trial_id):
            raise InvalidInputError("trial_id", trial_id, "must be an integer")
        record = self.trials.get(int(trial_id))
        if record is None:
            raise StateError(f"trial {trial_id!r} was never suggested by this tuner")
        if record.state not in ("running", "stopping"):
            raise StateError(f"trial {trial_id} is {record.state}, not running")
        return record

    def tell_report(self, trial_id: int, step: int, value: float) -> Decision:
        """Record an intermediate result and decide whether the trial goes on.

        A ``value`` that is not a real number raises
        :class:`~tunefleet.errors.InvalidInputError` and changes nothing (NaN and infinity are
        numbers: they count as the worst result); so does a number too large for a float
        (``10**400``, say), as the trial API refuses a metric beyond a double before it
        leaves the training process: report ``math.inf`` for "the worst result".

        ``step`` is the fidelity the value was measured at. A scheduler with a fidelity
        (ASHA, Hyperband, median stopping) judges steps in ``[fidelity.min, fidelity.max]``:
        a step at or beyond ``fidelity.max`` counts as full fidelity and is never stopped, so
        reporting in other units (iterations 100..2700 against a fidelity of 1..27) prunes
        nothing. Such a step is not refused here: the coordinator replays stored events
        through this method, and a study's store may hold steps beyond ``fidelity.max`` from
        coordinators older than the one that stops them at the door (it answers STOP to such a
        report without telling the tuner). A caller driving the tuner directly should keep
        steps within the scheduler's fidelity.
        """
        record = self._running(trial_id)
        try:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(type(value).__name__)
            value = float(value)
        except TypeError:
            raise InvalidInputError(
                "value", value, "must be a real number (NaN and inf count as the worst result)"
            ) from None
        except OverflowError:
            raise InvalidInputError(
                "value", value, "must be a real number a float can hold: this one is too large "
                "for a float (beyond about 1.8e308); report inf for the worst result"
            ) from None
        if not is_integer(step) or not 0 <= step <= MAX_STEP:
            raise InvalidInputError("step", step, f"must be an integer in [0, {MAX_STEP:,}]")
        step = int(step)
        if record.state == "stopping":
            return Decision.STOP
        if record.step is not None and step <= record.step:
            raise StateError(
                f"trial {trial_id}: steps must increase, but got step {step} after {record.step}"
            )
        self._touch()
        record.step, record.value = step, value
        signed = self._sign(value)
        self.searcher.on_report(trial_id, step, signed)
        decision = self.scheduler.on_report(trial_id, step, signed)
        if not math.isfinite(value):
            decision = Decision.STOP
        if decision is Decision.STOP:
            record.state = "stopping"
        return decision

    def tell_complete(self, trial_id: int) -> None:
        """The trial ended; it counts as pruned if the scheduler stopped it."""
        record = self._running(trial_id)
        self._touch()
        record.state = "pruned" if record.state == "stopping" else "completed"
        self._running_count -= 1
        signed = None if record.value is None else self._sign(record.value)
        self.searcher.on_complete(trial_id, signed)
        self.scheduler.on_complete(trial_id, signed)

    def tell_failed(self, trial_id: int) -> None:
        """The trial failed: it has no valid result."""
        record = self._running(trial_id)
        self._touch()
        record.state = "failed"
        self._running_count -= 1
        self.searcher.on_fail(trial_id)
        self.scheduler.on_fail(trial_id)

    @property
    def exhausted(self) -> bool:
        """True once no new trial will come: the budget is spent, or the searcher has run
        dry: it has handed out its :attr:`Searcher.capacity` (every grid point), or an
        :meth:`ask` got nothing from it."""
        capacity = self.searcher.capacity
        return self._exhausted or any(
            limit is not None and len(self.trials) >= limit
            for limit in (self.max_trials, capacity)
        )

    @property
    def running(self) -> list[int]:
        return [t for t, r in self.trials.items() if r.state in ("running", "stopping")]

    def best(self) -> TrialRecord | None:
        """The completed trial with the best value under the study's mode, if any, as the
        coordinator picks it: a pruned trial's value comes from a lower fidelity and does not
        compete."""
        best: TrialRecord | None = None
        for record in self.trials.values():
            if record.state == "completed" and record.value is not None and (
                math.isfinite(record.value)
            ) and (best is None or self.mode.better(record.value, best.value or 0.0)):
                best = record
        return best
