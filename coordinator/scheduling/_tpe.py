"""TPE: a tree-structured Parzen estimator searcher, multivariate, over the unit cube.

The finished trials are split into a *good* group (the best ``gamma`` fraction, at most
``max_good``) and a *bad* group; a new configuration maximises the ratio of the good density to
the bad one among candidates drawn from the good density. With a multi-fidelity scheduler the
model is fitted on the highest step that enough trials reached (BOHB style, see
:class:`~coordinator.scheduling._history.TrialHistory`); trials that stopped below that step join
the bad group.
"""

from __future__ import annotations

import math

import numpy as np

from coordinator.scheduling._base import checked_int, checked_real
from coordinator.scheduling._model_searcher import MAX_CANDIDATES, ModelSearcher
from coordinator.scheduling._parzen import DimensionKinds, ParzenEstimator
from tunefleet.space import FloatParam, SearchSpace

__all__ = ["TPESearcher"]


class TPESearcher(ModelSearcher):
    """Multivariate TPE with a constant liar for pending trials.

    Contract: the first ``n_startup`` trials, and every trial while fewer than ``n_startup``
    trials have results, get scrambled-Sobol points. Pending trials (suggested, not yet
    finished) that have no value at the fitted level count as *bad* (a constant liar), so a
    burst of suggestions spreads out instead of piling onto the current best region. In a
    space without float parameters the chosen candidate is the best-scored one whose
    configuration no trial has had yet (the best one when every candidate repeats a trial), so
    a burst does not run the same configuration twice. A
    ``random_fraction`` of suggestions (chosen from ``(seed, trial_id)``) stays quasi-random,
    which keeps the search from locking onto a misleading model; :meth:`explore` (a scheduler's
    probe) always gives the trial's scrambled-Sobol point.

    The defaults (6 start-up points up to 12 parameters, 24 candidates) were chosen on the
    simulator's suite (``scripts/bench_schedulers.py``) over 30 seeds; 10 start-up points and
    64 candidates needed about 15% more compute to reach the target at 8 workers.

    Arguments, checked when the searcher is built (anything else raises
    :class:`~tunefleet.errors.InvalidInputError` naming the argument): ``n_startup`` an integer
    >= 2, or ``None`` (``max(6, parameters // 2)``); ``gamma`` a finite number in ``(0, 1)``;
    ``max_good`` an integer >= 1; ``n_candidates`` an integer in ``[1, 100,000]``
    (:data:`~coordinator.scheduling._model_searcher.MAX_CANDIDATES`, the memory of a
    suggestion grows with it); ``random_fraction`` a finite number in ``[0, 1]``; ``widen`` a
    finite number in ``(0, 1000]`` (it multiplies the kernels' bandwidths); ints mean ints
    (not bools, not 2.5), numbers mean numbers (not strings).
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        n_startup: int | None = None,
        gamma: float = 0.15,
        max_good: int = 25,
        n_candidates: int = 24,
        random_fraction: float = 0.1,
        widen: float = 3.0,
    ) -> None:
        super().__init__(space, seed)
        gamma = checked_real("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
        n_candidates = checked_int("n_candidates", n_candidates, 1, MAX_CANDIDATES)
        random_fraction = checked_real("random_fraction", random_fraction, 0.0, 1.0)
        max_good = checked_int("max_good", max_good, 1)
        widen = checked_real("widen", widen, 0.0, 1000.0, low_open=True)
        self.n_startup = max(6, len(space) // 2) if n_startup is None else checked_int(
            "n_startup", n_startup, 2, none="max(6, parameters // 2)")
        self.gamma = gamma
        self.max_good = max_good
        self.n_candidates = n_candidates
        self.random_fraction = random_fraction
        self.widen = widen
        self._kinds = DimensionKinds.of(space)
        # only a space without float parameters makes two candidates the same configuration
        self._discrete = not any(isinstance(space[name], FloatParam) for name in space)

    def _suggest_point(self, trial_id: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, trial_id, 0x7E5])
        if trial_id < self.n_startup or rng.random() < self.random_fraction:
            return self._sobol[trial_id]
        data = self._history.training_set(self.n_startup)
        if data is None:
            return self._sobol[trial_id]
        order = np.argsort(data.y, kind="stable")
        n_good = min(max(1, math.ceil(self.gamma * len(order))), self.max_good)
        good = data.x[order[:n_good]]
        bad = np.concatenate([data.x[order[n_good:]], data.below, data.pending])
        l_model = ParzenEstimator(good, self._kinds)
        g_model = ParzenEstimator(bad, self._kinds)
        candidates = l_model.sample(rng, self.n_candidates, from_prior=False, widen=self.widen)
        score = l_model.log_pdf(candidates) - g_model.log_pdf(candidates)
        if self._discrete:  # the best candidate that no trial has run or is running yet
            for i in np.argsort(-score, kind="stable"):
                rounded = self.space.to_unit(self.space.from_unit(candidates[i]))
                if not self._history.tried(rounded):
                    return np.asarray(candidates[i])
        return np.asarray(candidates[int(np.argmax(score))])
