"""Quasi-random search: a scrambled Sobol sequence over the unit cube, reproducible by seed."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import qmc

from coordinator.scheduling._base import Config, Searcher
from tunefleet.space import SearchSpace

__all__ = ["QuasiRandomSearcher", "SobolPoints"]

_BLOCK = 256


class SobolPoints:
    """The points of one scrambled Sobol sequence in ``[0, 1]^d``, indexed from 0.

    Point ``i`` depends only on ``(dim, seed, i)``: points are generated in blocks of 256 from a
    freshly seeded engine that is fast-forwarded to the block, so the object holds only numpy
    arrays (it pickles) and the order of requests does not matter.
    """

    def __init__(self, dim: int, seed: int) -> None:
        self.dim = dim
        self.seed = seed
        self._blocks: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        block, offset = divmod(index, _BLOCK)
        points = self._blocks.get(block)
        if points is None:
            engine = qmc.Sobol(self.dim, scramble=True, seed=np.random.default_rng(self.seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # balance warnings: blocks are powers of two
                if block:
                    engine.fast_forward(block * _BLOCK)
                points = engine.random(_BLOCK)
            self._blocks[block] = points
        return np.array(points[offset])


class QuasiRandomSearcher(Searcher):
    """Trial ``i`` gets point ``i`` of a scrambled Sobol sequence, mapped through the space.

    Sobol points fill the cube more evenly than independent draws, so a small study covers every
    region early. The configuration of a trial depends only on ``(seed, trial_id)``.
    """

    def __init__(self, space: SearchSpace, seed: int) -> None:
        super().__init__(space, seed)
        self._points = SobolPoints(len(space), seed)

    def suggest(self, trial_id: int) -> Config | None:
        return self.space.from_unit(self._points[trial_id])
