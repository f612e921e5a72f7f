"""The scheduling core: searchers decide what to try, trial schedulers decide when to stop.

Pure and deterministic (no I/O, no clock, no threads). :func:`build_tuner` turns a study's
``[search]`` settings into a :class:`Tuner`; users can also compose one by hand and drive it
with ask/tell, without the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordinator.scheduling._asha import ASHAScheduler
from coordinator.scheduling._base import (
    AskStatus,
    Decision,
    Searcher,
    Suggestion,
    TrialScheduler,
    is_integer,
)
from coordinator.scheduling._fifo import FIFOScheduler
from coordinator.scheduling._gp import GPSearcher
from coordinator.scheduling._grid import GridSearcher
from coordinator.scheduling._hyperband import HyperbandScheduler
from coordinator.scheduling._median import MedianStoppingScheduler
from coordinator.scheduling._quasirandom import QuasiRandomSearcher
from coordinator.scheduling._random import RandomSearcher
from coordinator.scheduling._tpe import TPESearcher
from coordinator.scheduling._tuner import TrialRecord, Tuner
from tunefleet.errors import InvalidInputError
from tunefleet.search_limits import check_search_limits
from tunefleet.space import SearchSpace
from tunefleet.study import Fidelity, StudySpec

__all__ = [
    "AskStatus",
    "Decision",
    "Searcher",
    "Suggestion",
    "TrialScheduler",
    "TrialRecord",
    "Tuner",
    "GridSearcher",
    "RandomSearcher",
    "QuasiRandomSearcher",
    "TPESearcher",
    "GPSearcher",
    "FIFOScheduler",
    "ASHAScheduler",
    "HyperbandScheduler",
    "MedianStoppingScheduler",
    "SEARCHER_FACTORIES",
    "SCHEDULER_FACTORIES",
    "DEFAULTS_VERSION",
    "build_tuner",
]

SearcherFactory = Callable[[SearchSpace, int], Searcher]
SchedulerFactory = Callable[[Fidelity, int], TrialScheduler]

SEARCHER_FACTORIES: dict[str, SearcherFactory] = {
    "grid": lambda space, seed: GridSearcher(space, seed),
    "random": lambda space, seed: RandomSearcher(space, seed),
    "quasirandom": lambda space, seed: QuasiRandomSearcher(space, seed),
    "tpe": lambda space, seed: TPESearcher(space, seed),
    "gp": lambda space, seed: GPSearcher(space, seed),
}
SCHEDULER_FACTORIES: dict[str, SchedulerFactory] = {
    "fifo": lambda fidelity, seed: FIFOScheduler(),
    "asha": lambda fidelity, seed: ASHAScheduler(fidelity, seed),
    "hyperband": lambda fidelity, seed: HyperbandScheduler(fidelity, seed),
    "median": lambda fidelity, seed: MedianStoppingScheduler(fidelity, seed),
}


def check_available(spec: StudySpec) -> None:
    """Raise :class:`InvalidInputError` if this coordinator cannot run the study's search."""
    if spec.search.searcher not in SEARCHER_FACTORIES:
        raise InvalidInputError(
            "search.searcher", spec.search.searcher,
            f"is not available in this coordinator; available: {sorted(SEARCHER_FACTORIES)}",
        )
    if spec.search.scheduler not in SCHEDULER_FACTORIES:
        raise InvalidInputError(
            "search.scheduler", spec.search.scheduler,
            f"is not available in this coordinator; available: {sorted(SCHEDULER_FACTORIES)}",
        )
    check_search_limits(spec)

DEFAULTS_VERSION = 5
"""The version of the schedulers' defaults that a new study gets. A study keeps the version it
was submitted with, so a coordinator upgraded while it runs rebuilds it with the decisions it
was making. 1: :class:`HyperbandScheduler` without its lean to bracket 0 (``lean=None``), without
more probes when crowded (``probe_share_crowded=None``) and with the lowest rung keeping a third
(``first_keep=None``); 2: with the lean; 3: with more probes when crowded too; 4: the lowest rung
keeps a fifth; 5: a rung's evidence counts after 3 probe pairs instead of 4 (``min_pairs``)."""


def build_tuner(spec: StudySpec, defaults: int = DEFAULTS_VERSION) -> Tuner:
    """The tuner a study's settings select, seeded from ``search.seed``, with the schedulers'
    defaults of version ``defaults`` (1 to :data:`DEFAULTS_VERSION`)."""
    check_available(spec)
    if not is_integer(defaults) or defaults < 1:
        raise InvalidInputError("scheduling_defaults", defaults,
                                f"must be an integer from 1 to {DEFAULTS_VERSION}")
    if defaults > DEFAULTS_VERSION:
        raise InvalidInputError(
            "scheduling_defaults", defaults,
            f"must be 1 to {DEFAULTS_VERSION}; the study comes from a newer tunefleet, upgrade",
        )
    searcher = SEARCHER_FACTORIES[spec.search.searcher](spec.space, spec.search.seed)
    if spec.search.scheduler == "hyperband" and defaults < 5:
        older: dict[str, Any] = {"min_pairs": 4}
        if defaults < 4:
            older["first_keep"] = None
        if defaults < 3:
            older["probe_share_crowded"] = None
        if defaults < 2:
            older["lean"] = None
        scheduler: TrialScheduler = HyperbandScheduler(spec.fidelity, spec.search.seed, **older)
    else:
        scheduler = SCHEDULER_FACTORIES[spec.search.scheduler](spec.fidelity, spec.search.seed)
    return Tuner(
        searcher, scheduler, spec.objective.mode, spec.budget.max_trials, spec.search.max_running,
        spec.search.enqueue,
    )
