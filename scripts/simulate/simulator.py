"""Run a study in virtual time on N workers.

Each step of a trial costs the time the benchmark says (``bench.step_cost``: 1 for the test
functions, the measured relative epoch time for a tabular benchmark) on one worker. A worker that
becomes free asks the tuner for the next trial at once; a worker told to WAIT asks again after
every later event (each report of a step, in virtual time order), so a tuner whose scheduler
opens ``can_start`` after some report gets its waiting workers back at that report's time. The
simulation ends when the compute spent reaches ``budget`` (in step units), when the tuner is
exhausted, or when no trial runs and every worker is told to WAIT (nothing could change its
answer). Everything is deterministic: events at the same time run in worker order, and after
each event the waiting workers ask in worker order (a worker freed by that event asks last).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.scheduling import AskStatus, Decision, Suggestion
from tunefleet.errors import InvalidInputError

from .benchmarks import FIDELITY, Problem

__all__ = ["AskTell", "Trace", "simulate"]


class AskTell(Protocol):
    """The part of :class:`~coordinator.scheduling.Tuner` the simulator uses."""

    def ask(self) -> Suggestion: ...
    def tell_report(self, trial_id: int, step: int, value: float) -> Decision: ...
    def tell_complete(self, trial_id: int) -> None: ...


@dataclass
class Trace:
    """The incumbent (best full-fidelity value) over compute and virtual wall time."""

    compute: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    total_compute: float = 0.0
    trials: int = 0

    def first_reaching(self, target: float) -> tuple[float, float]:
        """(compute, wall time) when the incumbent first reached ``target``; inf if never."""
        for c, w, b in zip(self.compute, self.wall, self.best, strict=True):
            if b <= target:
                return c, w
        return math.inf, math.inf

    def best_at(self, compute: float) -> float:
        value = math.inf
        for c, b in zip(self.compute, self.best, strict=True):
            if c > compute:
                break
            value = b
        return value


def simulate(tuner: AskTell, bench: Problem, workers: int, budget: float) -> Trace:
    """Run ``tuner`` on ``bench`` with ``workers`` workers until ``budget`` compute is spent.

    ``workers`` must be an integer >= 1 and ``budget`` (compute in step units) a finite number
    > 0; anything else raises :class:`~tunefleet.errors.InvalidInputError` (a ``ValueError``)
    before the tuner is asked anything. A step starts only while the compute spent is below
    ``budget``, so the total exceeds it by less than the cost of one step; a trial running
    when the budget is spent is completed after its current step.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError("workers", workers, "an integer >= 1")
    if (isinstance(budget, bool) or not isinstance(budget, (int, float))
            or not math.isfinite(budget) or budget <= 0):
        raise InvalidInputError("budget", budget, "a finite number > 0 (compute in step units)")
    bench = bench.for_run()
    trace = Trace()
    events: list[tuple[float, int, int]] = []  # (time, worker, trial) when a step finishes
    state: dict[int, tuple[int, dict[str, Any], int]] = {}  # worker -> (trial, params, step)
    idle: list[int] = list(range(workers))  # waiting workers, in worker order
    spent, now, best = 0.0, 0.0, math.inf
    exhausted = False

    def start(worker: int) -> bool:
        nonlocal spent, exhausted
        if exhausted or spent >= budget:
            return False
        s = tuner.ask()
        if s.status is AskStatus.EXHAUSTED:
            exhausted = True
            return False
        if s.status is AskStatus.WAIT or s.trial_id is None or s.params is None:
            return False
        trace.trials += 1
        state[worker] = (s.trial_id, s.params, 1)
        cost = bench.step_cost(s.params, 1)
        spent += cost
        heapq.heappush(events, (now + cost, worker, s.trial_id))
        return True

    def retry(waiting: list[int]) -> list[int]:
        """Ask for a trial for each of ``waiting`` in that order; the ones still idle, sorted."""
        return sorted(w for w in waiting if not start(w))

    idle = retry(idle)
    while events:
        now, worker, trial_id = heapq.heappop(events)
        _, params, step = state[worker]
        value = bench.value(params, step)
        decision = tuner.tell_report(trial_id, step, value)
        if step >= FIDELITY.max and value < best:
            best = value
            trace.compute.append(spent)
            trace.wall.append(now)
            trace.best.append(best)
        if decision is Decision.STOP or step >= FIDELITY.max:
            tuner.tell_complete(trial_id)
            del state[worker]
            idle.append(worker)  # the freed worker asks after those already waiting
        elif spent < budget:
            state[worker] = (trial_id, params, step + 1)
            cost = bench.step_cost(params, step + 1)
            spent += cost
            heapq.heappush(events, (now + cost, worker, trial_id))
        else:
            tuner.tell_complete(trial_id)
            del state[worker]
        idle = retry(idle)  # after every event: a report may have opened the tuner
    trace.total_compute = spent
    return trace
