"""GP-EI: a Gaussian-process searcher with expected improvement.

The model is a zero-mean GP with a Matern 5/2 kernel with one length scale per input dimension
(categorical parameters are one-hot encoded), a signal variance and a noise variance, all fitted
by maximising the log marginal likelihood (with weak log-normal priors) with L-BFGS-B and an
analytic gradient. Values are standardised (zero mean, unit variance) before fitting.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.special import log_ndtr

from coordinator.scheduling._base import checked_int, checked_real
from coordinator.scheduling._history import WORST
from coordinator.scheduling._model_searcher import MAX_CANDIDATES, ModelSearcher
from tunefleet.space import CategoricalParam, SearchSpace

__all__ = ["GPSearcher", "Matern52GP"]

_SQRT5 = math.sqrt(5.0)

MAX_DUPLICATE_SKIPS = 256  # candidates passed over for being tried already, at most


def _encode_columns(space: SearchSpace) -> list[tuple[int, int]]:
    """Per parameter: (unit-cube index, number of one-hot columns; 0 for a numeric one)."""
    return [
        (i, len(p.choices) if isinstance(p, CategoricalParam) else 0)
        for i, p in enumerate(space.values())
    ]


def encode(points: np.ndarray, columns: list[tuple[int, int]]) -> np.ndarray:
    """Unit-cube points to GP inputs: numeric columns as they are, categoricals one-hot."""
    parts = []
    for i, k in columns:
        u = points[:, i]
        if k == 0:
            parts.append(u[:, None])
        else:
            idx = np.minimum((u * k).astype(int), k - 1)
            parts.append(np.eye(k)[idx])
    return np.concatenate(parts, axis=1) if parts else np.zeros((len(points), 0))


class Matern52GP:
    """A zero-mean GP with an ARD Matern 5/2 kernel; ``theta`` = log(length scales, sf2, sn2)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.theta = np.concatenate([np.full(dim, math.log(0.5)), [0.0, math.log(1e-2)]])
        self._lo = np.concatenate([np.full(dim, math.log(0.01)), [math.log(0.05), math.log(1e-6)]])
        self._hi = np.concatenate([np.full(dim, math.log(20.0)), [math.log(20.0), math.log(0.5)]])
        self.fitted = False
        self.fitted_on = 0  # how many observations the hyperparameters were last fitted on

    @staticmethod
    def _kernel(x1: np.ndarray, x2: np.ndarray, ls: np.ndarray, sf2: float) -> np.ndarray:
        # squared scaled distances as one matrix product (|a|^2 + |b|^2 - 2 a.b): memory
        # len(x1) x len(x2), not times the inputs as well
        a, b = x1 / ls, x2 / ls
        sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
        r = np.sqrt(np.maximum(sq, 0.0))
        return sf2 * (1.0 + _SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-_SQRT5 * r)

    def _neg_lml(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        d = self.dim
        ls, sf2, sn2 = np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1])
        n = len(y)
        sq = (x[:, None, :] - x[None, :, :]) ** 2 / (ls * ls)  # n x n x d
        r = np.sqrt(sq.sum(axis=2))
        e = np.exp(-_SQRT5 * r)
        k = sf2 * (1.0 + _SQRT5 * r + 5.0 / 3.0 * r * r) * e
        kn = k + (sn2 + 1e-8) * np.eye(n)
        try:
            chol = np.linalg.cholesky(kn)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve((chol, True), y)
        nll = 0.5 * y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * n * math.log(2 * math.pi)
        w = np.outer(alpha, alpha) - cho_solve((chol, True), np.eye(n))  # dL/dK, times 2
        grad = np.empty_like(theta)
        common = sf2 * 5.0 / 3.0 * (1.0 + _SQRT5 * r) * e  # dK/dlog(ls_j) = common * sq_j
        grad[:d] = -0.5 * np.einsum("ij,ijk->k", w * common, sq)
        grad[d] = -0.5 * (w * k).sum()
        grad[d + 1] = -0.5 * np.trace(w) * sn2
        # weak priors: length scales around 0.5, signal variance around 1 (standardised)
        prior_mu = np.concatenate([np.full(d, math.log(0.5)), [0.0]])
        dev = theta[: d + 1] - prior_mu
        nll += 0.5 * (dev * dev).sum() / 1.5**2
        grad[: d + 1] += dev / 1.5**2
        return float(nll), grad

    def fit(self, x: np.ndarray, y: np.ndarray, max_iter: int = 50) -> None:
        """Fit the hyperparameters (warm-started from the last fit) and condition on ``(x, y)``."""
        best_theta, best_val = self.theta, math.inf
        default = np.concatenate([np.full(self.dim, math.log(0.5)), [0.0, math.log(1e-2)]])
        starts = [self.theta] if self.fitted else [default]
        if self.fitted and len(y) < 100:
            starts.append(default)
        for start in starts:
            result = minimize(
                self._neg_lml, np.clip(start, self._lo, self._hi), args=(x, y), jac=True,
                method="L-BFGS-B", bounds=list(zip(self._lo, self._hi, strict=True)),
                options={"maxiter": max_iter},
            )
            if np.isfinite(result.fun) and result.fun < best_val:
                best_theta, best_val = np.asarray(result.x), float(result.fun)
        self.theta = best_theta
        self.fitted, self.fitted_on = True, len(y)
        self.condition(x, y)

    def condition(self, x: np.ndarray, y: np.ndarray, exact: int = 0) -> None:
        """Condition on ``(x, y)`` with the current hyperparameters; the last ``exact`` points
        are taken as noise-free (fantasies of pending trials, so no variance is left there)."""
        d = self.dim
        ls, sf2, sn2 = np.exp(self.theta[:d]), math.exp(self.theta[d]), math.exp(self.theta[d + 1])
        noise = np.full(len(x), sn2 + 1e-6)
        if exact:
            noise[len(x) - exact:] = 1e-6
        kn = self._kernel(x, x, ls, sf2) + np.diag(noise)
        self._x, self._chol = x, np.linalg.cholesky(kn)
        self._alpha = cho_solve((self._chol, True), y)

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (of the latent function) at ``xs``."""
        d = self.dim
        ls, sf2 = np.exp(self.theta[:d]), math.exp(self.theta[d])
        ks = self._kernel(xs, self._x, ls, sf2)
        mean = ks @ self._alpha
        v = solve_triangular(self._chol, ks.T, lower=True)
        var = np.maximum(sf2 - (v * v).sum(axis=0), 1e-12)
        return mean, np.sqrt(var)


def log_expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log EI for minimisation, stable far into the tail."""
    z = (best - mean) / std
    out = np.empty_like(z)
    mid = z > -6.0
    zm = z[mid]
    h = np.exp(-0.5 * zm * zm) / math.sqrt(2 * math.pi) + zm * np.exp(log_ndtr(zm))
    out[mid] = np.log(np.maximum(h, 1e-300))
    zt = z[~mid]
    out[~mid] = -0.5 * zt * zt - 0.5 * math.log(2 * math.pi) - 2.0 * np.log(-zt)
    return out + np.log(std)


MAX_POINTS = 1_000  # GPSearcher's max_points, at most

_HUGE = 1e100  # beyond this magnitude, values are scaled before their variance is taken


def standardise(y: np.ndarray) -> np.ndarray:
    """Values to zero mean and unit variance (a constant vector maps to zeros).

    A value at :data:`~coordinator.scheduling._history.WORST` or above (the history's stand-in
    for NaN and infinity, "the worst possible result") counts as the worst of the other values,
    so one such result cannot flatten the model; values of huge magnitude are scaled down
    first, so their squares never overflow."""
    y = np.array(y, dtype=float)
    worst = y >= WORST
    if worst.any():
        y[worst] = y[~worst].max() if not worst.all() else 0.0
    scale = float(np.abs(y).max()) if len(y) else 0.0
    if scale > _HUGE:
        y = y / scale
    std = float(y.std())
    return (y - y.mean()) / (std if std > 0 else 1.0)


class GPSearcher(ModelSearcher):
    """GP with expected improvement; pending trials enter as fantasies (a pessimistic liar).

    Contract: the first ``n_startup`` trials, and every trial while fewer than ``n_startup``
    trials have results, get scrambled-Sobol points. Each suggestion refits the GP on the
    fitted level (see :class:`~coordinator.scheduling._history.TrialHistory`); trials that
    stopped below it count with the worst observed score; pending trials are added, noise-free,
    with the worst observed score too (a constant liar), which removes the model's hope around
    them so that a burst of suggestions spreads out.
    At most ``max_points`` observations are used (the best half and an even spread of the rest).
    Hyperparameters are refitted once the data grew by ``refit_growth`` since the last fit (or
    shrank, when the fitted level changes); in between the GP is only conditioned on new data.

    Arguments, checked when the searcher is built (anything else raises
    :class:`~tunefleet.errors.InvalidInputError` naming the argument): ``n_startup`` an integer
    >= 2, or ``None`` (``max(8, parameters + 2)``); ``n_candidates`` an integer in
    ``[1, 100,000]`` (:data:`~coordinator.scheduling._model_searcher.MAX_CANDIDATES`);
    ``max_points`` an integer in ``[10, 1,000]`` (:data:`MAX_POINTS`: a fit's memory grows
    with its square times the GP's inputs); ``refit_growth`` a finite number >= 1; ints mean
    ints (not bools, not 2.5), numbers mean numbers (not strings).
    """

    def __init__(
        self, space: SearchSpace, seed: int, n_startup: int | None = None,
        n_candidates: int = 1024, max_points: int = 200, refit_growth: float = 1.1,
    ) -> None:
        super().__init__(space, seed)
        n_candidates = checked_int("n_candidates", n_candidates, 1, MAX_CANDIDATES)
        max_points = checked_int("max_points", max_points, 10, MAX_POINTS)
        refit_growth = checked_real("refit_growth", refit_growth, 1.0)
        self.n_startup = max(8, len(space) + 2) if n_startup is None else checked_int(
            "n_startup", n_startup, 2, none="max(8, parameters + 2)")
        self.n_candidates = n_candidates
        self.max_points = max_points
        self.refit_growth = refit_growth
        self._columns = _encode_columns(space)
        self._gp = Matern52GP(self.input_columns(space))

    @staticmethod
    def input_columns(space: SearchSpace) -> int:
        """How many inputs the GP has for ``space``: one per numeric parameter, one per choice
        of each categorical one (its memory per suggestion grows with them)."""
        return sum(max(k, 1) for _, k in _encode_columns(space))

    def _suggest_point(self, trial_id: int) -> np.ndarray:
        if trial_id < self.n_startup:
            return self._sobol[trial_id]
        data = self._history.training_set(self.n_startup)
        if data is None:
            return self._sobol[trial_id]
        rng = np.random.default_rng([self.seed, trial_id, 0x69])
        x_unit, y = data.x, data.y
        if len(y) > self.max_points:
            order = np.argsort(y, kind="stable")
            half = self.max_points // 2
            rest = order[half:][np.linspace(0, len(order) - half - 1, half).astype(int)]
            keep = np.concatenate([order[:half], rest])
            x_unit, y = x_unit[keep], y[keep]
        scores = standardise(y)
        if len(data.below):
            below = data.below[: self.max_points // 2]
            x_unit = np.concatenate([x_unit, below])
            scores = np.concatenate([scores, np.full(len(below), scores.max())])
        x = encode(x_unit, self._columns)
        if self._gp.fitted and len(scores) < self.refit_growth * self._gp.fitted_on and (
            len(scores) >= self._gp.fitted_on
        ):
            self._gp.condition(x, scores)  # hyperparameters still fresh: only condition
        else:
            self._gp.fit(x, scores)
        best = float(scores.min())
        if len(data.pending):
            xp = encode(data.pending, self._columns)
            fantasy = np.full(len(xp), float(scores.max()))
            self._gp.condition(
                np.concatenate([x, xp]), np.concatenate([scores, fantasy]), exact=len(xp)
            )
        candidates = self._candidates(rng, x_unit[np.argsort(scores)[:5]])
        mean, std = self._gp.predict(encode(candidates, self._columns))
        acq = log_expected_improvement(mean, std, best)
        # the best candidate no trial has run or is running: an unperturbed local candidate
        # is an incumbent itself, and in a discrete space many candidates decode alike
        for i in np.argsort(-acq, kind="stable")[:MAX_DUPLICATE_SKIPS]:
            if not self._history.tried(self.space.to_unit(self.space.from_unit(candidates[i]))):
                return np.asarray(candidates[i])
        return np.asarray(candidates[int(np.argmax(acq))])

    def _candidates(self, rng: np.random.Generator, incumbents: np.ndarray) -> np.ndarray:
        d = len(self.space)
        uniform = rng.random((self.n_candidates, d))
        local = []
        per = max(self.n_candidates // (2 * max(len(incumbents), 1)), 1)
        for scale in (0.02, 0.1):
            for inc in incumbents:
                step = rng.normal(0.0, scale, (per, d))
                mask = rng.random((per, d)) < min(1.0, 3.0 / d)
                local.append(np.clip(inc + step * mask, 0.0, 1.0))
        return np.concatenate([uniform, *local])
