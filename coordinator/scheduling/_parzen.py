"""Multivariate Parzen estimators over the unit cube, vectorised with numpy.

Continuous and integer dimensions use Gaussian kernels truncated to ``[0, 1]``; categorical
dimensions use an Aitchison-Aitken kernel over the choice index. Every estimator mixes in a
uniform prior component, so its density is positive everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, ndtr, ndtri

from tunefleet.space import CategoricalParam, IntParam, SearchSpace

__all__ = ["DimensionKinds", "ParzenEstimator"]

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


@dataclass(frozen=True)
class DimensionKinds:
    """Which unit-cube dimensions are numeric and which categorical, with their sizes."""

    numeric: np.ndarray  # indices of float and int dimensions
    min_bandwidth: np.ndarray  # per numeric dimension
    categorical: np.ndarray  # indices of categorical dimensions
    n_choices: np.ndarray  # per categorical dimension

    @classmethod
    def of(cls, space: SearchSpace) -> DimensionKinds:
        numeric, min_bw, categorical, sizes = [], [], [], []
        for i, name in enumerate(space):
            p = space[name]
            if isinstance(p, CategoricalParam):
                categorical.append(i)
                sizes.append(len(p.choices))
            else:
                numeric.append(i)
                # an integer with k values: a kernel narrower than one value carries no meaning
                min_bw.append(0.5 / (p.high - p.low + 1) if isinstance(p, IntParam) else 0.005)
        return cls(
            np.array(numeric, dtype=int), np.array(min_bw, dtype=float),
            np.array(categorical, dtype=int), np.array(sizes, dtype=int),
        )


class ParzenEstimator:
    """A mixture of product kernels centred on ``points`` plus a uniform prior.

    ``prior_weight`` is the prior's weight relative to one kernel. Bandwidths follow Scott's
    rule on the spread of the points, floored so that few points never collapse the estimator.
    """

    def __init__(
        self, points: np.ndarray, kinds: DimensionKinds, prior_weight: float = 1.0,
        bandwidth_scale: float = 1.0,
    ) -> None:
        self.kinds = kinds
        m = len(points)
        self.n = m
        num = points[:, kinds.numeric]
        self.mu = num
        d = max(len(kinds.numeric) + len(kinds.categorical), 1)
        shrink = max(m, 1) ** (-1.0 / (d + 4))
        spread = num.std(axis=0) if m > 1 else np.full(num.shape[1], 0.3)
        floor = np.maximum(kinds.min_bandwidth, 0.3 / (m + 1))
        self.sigma = np.clip(spread * shrink * bandwidth_scale, floor, 1.0)
        # mass of each kernel inside [0, 1]: normalises the truncated Gaussians
        lo = ndtr((0.0 - num) / self.sigma)
        hi = ndtr((1.0 - num) / self.sigma)
        self._cdf_lo, self._cdf_hi = lo, hi
        self._log_mass = np.log(np.maximum(hi - lo, 1e-300))
        self.cat_index = np.minimum(
            (points[:, kinds.categorical] * kinds.n_choices).astype(int), kinds.n_choices - 1
        )
        k = kinds.n_choices.astype(float)
        self.cat_other = (k - 1) / k / (1.0 + np.sqrt(max(m, 1)))  # total mass off the centre
        total = m + prior_weight
        self.log_w_kernel = np.log(1.0 / total) if m else -np.inf
        self.log_w_prior = np.log(prior_weight / total)

    def sample(
        self, rng: np.random.Generator, size: int, from_prior: bool = True, widen: float = 1.0
    ) -> np.ndarray:
        """Draw ``size`` points of ``[0, 1]^d`` from the mixture (without ``from_prior``: from
        the kernels alone, when there are any; ``widen`` multiplies the numeric bandwidths)."""
        kinds = self.kinds
        dim = len(kinds.numeric) + len(kinds.categorical)
        out = rng.random((size, dim))  # prior draws; kernel draws overwrite them below
        if self.n == 0:
            return out
        p_prior = np.exp(self.log_w_prior) if from_prior else 0.0
        which = rng.integers(0, self.n, size)
        use_kernel = rng.random(size) >= p_prior
        rows = np.nonzero(use_kernel)[0]
        comp = which[rows]
        if len(kinds.numeric):
            u = rng.random((len(rows), len(kinds.numeric)))
            sigma = self.sigma * widen
            mu = self.mu[comp]
            lo, hi = ndtr((0.0 - mu) / sigma), ndtr((1.0 - mu) / sigma)
            q = np.clip(lo + u * (hi - lo), 1e-12, 1 - 1e-12)
            x = mu + sigma * ndtri(q)
            out[np.ix_(rows, kinds.numeric)] = np.clip(x, 0.0, 1.0)
        if len(kinds.categorical):
            k = kinds.n_choices
            centre = self.cat_index[comp]
            move = rng.random((len(rows), len(k))) < self.cat_other
            other = (centre + 1 + (rng.random((len(rows), len(k))) * (k - 1)).astype(int)) % k
            idx = np.where(move, other, centre)
            out[np.ix_(rows, kinds.categorical)] = (idx + 0.5) / k
        return out

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at each row of ``x`` (shape ``(c, d)``)."""
        kinds = self.kinds
        c = len(x)
        if self.n == 0:
            return np.zeros(c)
        log_k = np.zeros((c, self.n))
        if len(kinds.numeric):
            # squared Mahalanobis distances as one matrix product: |a|^2 + |b|^2 - 2 a.b
            xs = x[:, kinds.numeric] / self.sigma
            ms = self.mu / self.sigma
            sq = (xs * xs).sum(axis=1)[:, None] + (ms * ms).sum(axis=1)[None, :] - 2.0 * xs @ ms.T
            log_k -= 0.5 * np.maximum(sq, 0.0)
            log_k -= (np.log(self.sigma).sum() + _LOG_SQRT_2PI * len(kinds.numeric))
            log_k -= self._log_mass.sum(axis=1)[None, :]
        if len(kinds.categorical):
            k = kinds.n_choices
            idx = np.minimum((x[:, kinds.categorical] * k).astype(int), k - 1)
            p_same = np.log(1.0 - self.cat_other)
            p_other = np.log(self.cat_other / np.maximum(k - 1, 1) + 1e-300)
            # one-hot codes over all choices of all categorical dimensions
            offsets = np.concatenate([[0], np.cumsum(k)[:-1]])
            total = int(k.sum())
            x_code = np.zeros((c, total))
            x_code[np.arange(c)[:, None], offsets + idx] = 1.0
            c_code = np.zeros((self.n, total))
            c_code[np.arange(self.n)[:, None], offsets + self.cat_index] = 1.0
            gain = np.repeat(p_same - p_other, k)
            log_k += (x_code * gain) @ c_code.T + p_other.sum()
        stacked = np.concatenate(
            [log_k + self.log_w_kernel, np.full((c, 1), self.log_w_prior + self._log_prior())],
            axis=1,
        )
        return np.asarray(logsumexp(stacked, axis=1))

    def _log_prior(self) -> float:
        # uniform over the cube; categorical dims carry mass 1/k per choice
        return float(-np.log(self.kinds.n_choices).sum()) if len(self.kinds.categorical) else 0.0
