"""Random search: independent draws from the space, reproducible from the seed."""

from __future__ import annotations

import numpy as np

from coordinator.scheduling._base import Config, Searcher

__all__ = ["RandomSearcher"]


class RandomSearcher(Searcher):
    """Draws each configuration independently; trial ``i`` always gets the same draw.

    The draw depends only on ``(seed, trial_id)``, never on the order of calls, so replaying a
    study or asking in a different interleaving gives the same configurations.
    """

    def suggest(self, trial_id: int) -> Config | None:
        rng = np.random.default_rng([self.seed, trial_id])
        return self.space.sample(rng)
