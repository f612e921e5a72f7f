"""Grid search: every combination of the parameters' grid values, each exactly once."""

from __future__ import annotations

import itertools

import numpy as np

from coordinator.scheduling._base import Config, Searcher
from tunefleet.search_limits import grid_size
from tunefleet.space import SearchSpace

__all__ = ["GridSearcher"]


class GridSearcher(Searcher):
    """Enumerates the cartesian product of per-parameter grids in a seeded random order.

    Categorical parameters contribute all their choices, integer parameters all their values (or
    ``points`` evenly spread ones when there are more), float parameters ``points`` evenly spread
    values (log-spread for log parameters). :meth:`suggest` returns ``None`` once every
    combination has been handed out.
    """

    @staticmethod
    def size_of(space: SearchSpace, points: int = 5) -> int:
        """How many combinations the grid of ``space`` has, without building it."""
        return grid_size(space, points)

    def __init__(self, space: SearchSpace, seed: int, points: int = 5) -> None:
        super().__init__(space, seed)
        axes = [space[name].grid(points) for name in space]
        combos = list(itertools.product(*axes))
        order = np.random.default_rng(seed).permutation(len(combos))
        self._combos = [dict(zip(space, combos[i], strict=True)) for i in order]

    @property
    def size(self) -> int:
        return len(self._combos)

    @property
    def capacity(self) -> int:
        return self.size

    def suggest(self, trial_id: int) -> Config | None:
        if trial_id >= len(self._combos):
            return None
        return dict(self._combos[trial_id])
