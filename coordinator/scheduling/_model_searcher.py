"""The part every model-based searcher shares: a history of its points, probes from Sobol."""

from __future__ import annotations

import abc

import numpy as np

from coordinator.scheduling._base import Config, Searcher
from coordinator.scheduling._history import TrialHistory
from coordinator.scheduling._quasirandom import SobolPoints
from tunefleet.space import SearchSpace

__all__ = ["MAX_CANDIDATES", "ModelSearcher"]

MAX_CANDIDATES = 100_000  # candidates scored per suggestion, at most (memory grows with them)


class ModelSearcher(Searcher):
    """A searcher that models the results it is told of.

    Contract: every suggested point (in the unit cube, after rounding to the space) is recorded
    in a :class:`~coordinator.scheduling._history.TrialHistory` with the trial's reports and
    end; :meth:`explore` gives the trial's scrambled-Sobol point; :meth:`adopt` replaces a
    recorded point by the configuration the trial actually ran. Subclasses propose points with
    :meth:`_suggest_point`.
    """

    def __init__(self, space: SearchSpace, seed: int) -> None:
        super().__init__(space, seed)
        self._sobol = SobolPoints(len(space), seed)
        self._history = TrialHistory(len(space))

    @abc.abstractmethod
    def _suggest_point(self, trial_id: int) -> np.ndarray:
        """The unit-cube point to try for ``trial_id``."""

    def suggest(self, trial_id: int) -> Config | None:
        return self._register(trial_id, self._suggest_point(trial_id))

    def explore(self, trial_id: int) -> Config | None:
        return self._register(trial_id, self._sobol[trial_id])

    def adopt(self, trial_id: int, config: Config) -> None:
        self._history.add(trial_id, self.space.to_unit(config))

    def _register(self, trial_id: int, point: np.ndarray) -> Config:
        config = self.space.from_unit(point)
        self.adopt(trial_id, config)
        return config

    def on_report(self, trial_id: int, step: int, value: float) -> None:
        self._history.report(trial_id, step, value)

    def on_complete(self, trial_id: int, value: float | None) -> None:
        self._history.finish(trial_id, value)

    def on_fail(self, trial_id: int) -> None:
        self._history.fail(trial_id)
