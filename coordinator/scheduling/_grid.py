"""Grid search: every combination of the parameters' grid values, each exactly once."""

from __future__ import annotations

import itertools

import numpy as np

from coordinator.scheduling._base import Config, Searcher, checked_int, checked_space
from tunefleet.errors import InvalidInputError
from tunefleet.search_limits import MAX_GRID_POINTS, grid_size
from tunefleet.space import ParamValue, SearchSpace

__all__ = ["GridSearcher"]


class GridSearcher(Searcher):
    """Enumerates the cartesian product of per-parameter grids in a seeded random order.

    Categorical parameters contribute all their choices, integer parameters all their values (or
    ``points`` evenly spread ones when there are more), float parameters ``points`` evenly spread
    values (log-spread for log parameters). :meth:`suggest` returns ``None`` once every
    combination has been handed out.

    Contract: ``points`` is an integer in ``[1, MAX_GRID_POINTS]``, and the grid may have at
    most :data:`~tunefleet.search_limits.MAX_GRID_POINTS` combinations (the limit a study's
    grid search has); anything else, like a space that is not a
    :class:`~tunefleet.space.SearchSpace`, raises :class:`~tunefleet.errors.InvalidInputError`
    before any combination is enumerated.
    """

    @staticmethod
    def size_of(space: SearchSpace, points: int = 5) -> int:
        """How many combinations the grid of ``space`` has, without building it (the same
        arguments as the constructor; no limit on the size)."""
        return grid_size(checked_space(space), checked_int("points", points, 1, MAX_GRID_POINTS))

    def __init__(self, space: SearchSpace, seed: int, points: int = 5) -> None:
        super().__init__(space, seed)
        points = checked_int("points", points, 1, MAX_GRID_POINTS)
        axes: list[list[ParamValue]] = []
        size = 1
        for name in space:  # one axis at a time: a huge grid is refused before it is built
            axes.append(space[name].grid(points))
            size *= len(axes[-1])
            if size > MAX_GRID_POINTS:
                raise InvalidInputError(
                    "space", f"a grid of more than {MAX_GRID_POINTS:,} points (points={points})",
                    f"the grid may have at most {MAX_GRID_POINTS:,} points (MAX_GRID_POINTS); "
                    "use RandomSearcher, QuasiRandomSearcher or TPESearcher, or fewer "
                    "parameters or points",
                )
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
