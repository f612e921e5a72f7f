"""The contracts of the scheduling core: searchers, trial schedulers and the ask/tell tuner.

Everything here is pure and deterministic: no I/O, no wall clock, no threads. Given the same seed
and the same sequence of calls, every object makes the same decisions, so the coordinator can
rebuild one after a restart by replaying its stored events, and a simulator can run a whole
study in virtual time.

Values passed to searchers and trial schedulers are always *to be minimised*: the
:class:`~coordinator.scheduling.Tuner` negates them for a study whose mode is ``max``.
"""

from __future__ import annotations

import abc
import enum
import math
import numbers
from dataclasses import dataclass
from typing import Any

from tunefleet.errors import InvalidInputError
from tunefleet.space import ParamValue, SearchSpace
from tunefleet.study import MAX_STEP, Fidelity

__all__ = ["Decision", "AskStatus", "Suggestion", "Searcher", "TrialScheduler", "checked_fidelity",
           "checked_int", "checked_real", "checked_seed", "checked_space", "is_integer"]

Config = dict[str, ParamValue]


class Decision(enum.Enum):
    """What a running trial should do after a report."""

    CONTINUE = "continue"
    STOP = "stop"


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (numpy's included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


MAX_ETA = 1000  # the largest ``fidelity.eta`` a study file takes


def checked_fidelity(fidelity: Fidelity) -> Fidelity:
    """``fidelity`` with plain ints, refused unless a :class:`~tunefleet.study.Fidelity` that a
    study file could give: integers (not bools) with ``1 <= min <= max <= MAX_STEP`` and
    ``2 <= eta <= 1000``."""
    if not isinstance(fidelity, Fidelity):
        raise InvalidInputError("fidelity", fidelity,
                                "must be a tunefleet.study.Fidelity(min, max, eta)")
    for name, value, low, high in (("min", fidelity.min, 1, MAX_STEP),
                                   ("max", fidelity.max, 1, MAX_STEP),
                                   ("eta", fidelity.eta, 2, MAX_ETA)):
        if not is_integer(value) or not low <= value <= high:
            raise InvalidInputError(f"fidelity.{name}", value,
                                    f"must be an integer in [{low}, {high:,}]")
    if fidelity.min > fidelity.max:
        raise InvalidInputError(
            "fidelity", fidelity,
            f"`min <= max` must hold, but got (min={fidelity.min}, max={fidelity.max})",
        )
    if all(type(v) is int for v in (fidelity.min, fidelity.max, fidelity.eta)):
        return fidelity
    return Fidelity(int(fidelity.min), int(fidelity.max), int(fidelity.eta))


def checked_int(name: str, value: object, low: int, high: int | None = None,
                none: str | None = None) -> int:
    """``value`` as an int, refused unless an integer (numpy's included, not a bool) in
    ``[low, high]`` (``high=None``: no upper bound). ``none`` says what ``None`` means where
    the caller allows it (and handles it itself): the message then mentions it."""
    n = int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else None
    if n is None or n < low or (high is not None and n > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high:,}]"
        raise InvalidInputError(name, value, f"must be an integer {bound}"
                                + (f", or None: {none}" if none else ""))
    return n


def checked_real(name: str, value: object, low: float, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False,
                 none: str | None = None) -> float:
    """``value`` as a float, refused unless a finite real number (numpy's included; not a
    bool, not a string) from ``low`` to ``high``, an end excluded when its ``*_open`` is set
    (``high=inf``: no upper bound). ``none`` says what ``None`` means where the caller allows
    it (and handles it itself): the message then mentions it."""
    v = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            v = float(value)
        except (OverflowError, ValueError, TypeError):  # a Fraction beyond a double, say
            v = math.nan
    above = low < v if low_open else low <= v
    below = v < high if high_open else v <= high
    if not (math.isfinite(v) and above and below):
        if math.isinf(high):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InvalidInputError(name, value, f"must be a finite number {bound}"
                                + (f", or None: {none}" if none else ""))
    return v


def checked_space(space: SearchSpace) -> SearchSpace:
    """``space``, refused unless a :class:`~tunefleet.space.SearchSpace`."""
    if not isinstance(space, SearchSpace):
        raise InvalidInputError("space", space,
                                "must be a SearchSpace (SearchSpace.from_mapping(...))")
    return space


def checked_seed(seed: int) -> int:
    """``seed``, refused unless an integer in ``[0, 2**63)`` (what numpy's generators and the
    study file's ``search.seed`` take)."""
    if not is_integer(seed) or not 0 <= int(seed) < 2**63:
        raise InvalidInputError("seed", seed, "must be an integer in [0, 2**63)")
    return int(seed)


class AskStatus(enum.Enum):
    """The outcome of :meth:`Tuner.ask`."""

    READY = "ready"  # a new trial: ``trial_id`` and ``params`` are set
    WAIT = "wait"  # nothing to start now; ask again after the next tell
    EXHAUSTED = "exhausted"  # the search or the budget is spent: no new trial will come


@dataclass(frozen=True)
class Suggestion:
    status: AskStatus
    trial_id: int | None = None
    params: Config | None = None


class Searcher(abc.ABC):
    """Decides *what* to try.

    Contract: :meth:`suggest` is called with consecutive trial ids starting at 0 and returns a
    configuration of the space, or ``None`` when the searcher has nothing more to offer (a
    finished grid). Trials that were suggested and have not been completed or failed are
    *pending*; a searcher that models results must account for them so that many suggestions in
    a row stay diverse. Results arrive through :meth:`on_report` (intermediate, at a step) and
    :meth:`on_complete` (final value, or ``None`` when the trial never reported one).
    ``space`` must be a :class:`~tunefleet.space.SearchSpace` and ``seed`` an integer in
    ``[0, 2**63)``: anything else raises :class:`~tunefleet.errors.InvalidInputError` when
    the searcher is built.
    """

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = checked_space(space)
        self.seed = checked_seed(seed)

    @abc.abstractmethod
    def suggest(self, trial_id: int) -> Config | None:
        """Return the configuration for ``trial_id``, or ``None`` when exhausted."""

    @property
    def capacity(self) -> int | None:
        """How many trials this searcher can suggest in all, when that is known in advance
        (a grid's size; ``None``, the default: no known end). A tuner that has handed out
        that many trials is exhausted without asking for another."""
        return None

    def explore(self, trial_id: int) -> Config | None:
        """Like :meth:`suggest`, but drawn without a model (quasi-random, say): asked for the
        probes of a scheduler (:meth:`TrialScheduler.wants_probe`). The default suggests."""
        return self.suggest(trial_id)

    def adopt(self, trial_id: int, config: Config) -> None:
        """``trial_id`` (just suggested) actually runs ``config``: a replay whose suggestion
        differs from what was stored, say after an upgrade changed a default. Searchers that
        remember their suggestions replace them; the default does nothing."""

    def on_report(self, trial_id: int, step: int, value: float) -> None:
        """An intermediate result of ``trial_id`` at ``step`` (to be minimised)."""

    def on_complete(self, trial_id: int, value: float | None) -> None:
        """``trial_id`` ended (completed or pruned) with its last value, if any."""

    def on_fail(self, trial_id: int) -> None:
        """``trial_id`` failed: it has no valid result."""


class TrialScheduler(abc.ABC):
    """Decides *when* a running trial should stop.

    Contract: :meth:`on_add` is called once for every trial the tuner starts, then
    :meth:`on_report` for each of its reports in order, and it answers CONTINUE or STOP. A trial
    that got STOP is expected to end (it will be completed as pruned). :meth:`on_complete` and
    :meth:`on_fail` end a trial. :meth:`can_start` lets a scheduler hold new trials back (for
    example while it would rather promote a paused one); the default always allows.
    :meth:`wants_probe` is asked once per trial, just before :meth:`on_add`: a *probe* gets its
    configuration from :meth:`Searcher.explore` instead of :meth:`Searcher.suggest`.
    """

    def on_add(self, trial_id: int) -> None:
        """A trial started."""

    @abc.abstractmethod
    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        """Decide after a report of ``trial_id`` at ``step`` (value to be minimised)."""

    def on_complete(self, trial_id: int, value: float | None) -> None:
        """A trial ended with its last value, if any."""

    def on_fail(self, trial_id: int) -> None:
        """A trial failed."""

    def can_start(self) -> bool:
        return True

    def wants_probe(self, trial_id: int) -> bool:
        """Whether ``trial_id``, about to start, should be a probe (default: never)."""
        return False


def describe(obj: Any) -> str:
    """A short name of a searcher or scheduler for logs."""
    return type(obj).__name__
