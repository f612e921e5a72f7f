"""Multi-fidelity benchmark functions, as learning curves over the integer ``step``.

Every benchmark is minimised. Fidelity runs over steps ``1..27`` (``eta = 3``); step ``t``
maps to the continuous fidelity ``z = log(t) / log(27)`` of the published forms, so the rungs
1, 3, 9 and 27 sit at ``z = 0, 1/3, 2/3, 1``. Sources of the multi-fidelity forms:

- Branin and Hartmann-6: Kandasamy et al., "Multi-fidelity Bayesian optimisation with
  continuous approximations" (BOCA, ICML 2017), appendix: Branin with
  ``b(z) = 5.1/(4 pi^2) - 0.01 (1 - z)``, ``c(z) = 5/pi - 0.1 (1 - z)``,
  ``t(z) = 1/(8 pi) + 0.05 (1 - z)``; Hartmann-6 with ``alpha'(z) = alpha - 0.1 (1 - z)``.
- Borehole, Park and Currin: Xiong, Qian and Wu, "Sequential design and analysis of
  high-accuracy and low-accuracy computer codes" (Technometrics 2013), two fidelities; the
  continuous form here is ``z * f_high + (1 - z) * f_low``. They are maximisation problems in
  the literature, so the benchmark minimises their negation.
- ``crossing``: Hartmann-6 at full fidelity, reached along learning curves whose speed is slower
  for better configurations, so steps 1, 3 and 9 rank configurations in the wrong order.
- ``digits``: the tabular learning curves of the template's digits MLP, trained for real
  (:mod:`simulate.tabular`).

Every benchmark offers the :class:`Problem` interface; a step of a function benchmark costs 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import numpy as np
from scipy.optimize import minimize

from tunefleet.space import SearchSpace
from tunefleet.study import Fidelity

from .tabular import DIGITS_TABLE, TabularBenchmark

__all__ = ["Benchmark", "BENCHMARKS", "FIDELITY", "Problem"]

FIDELITY = Fidelity(min=1, max=27, eta=3)

# A function of (points in the box, shape (n, d); fidelity z in [0, 1]) -> values (n,)
Vectorised = Callable[[np.ndarray, float], np.ndarray]


class Problem(Protocol):
    """What the simulator and the benchmark script need of a benchmark (minimised)."""

    @property
    def name(self) -> str: ...
    @property
    def space(self) -> SearchSpace: ...
    @property
    def optimum(self) -> float: ...
    def value(self, params: Mapping[str, Any], step: int) -> float: ...
    def step_cost(self, params: Mapping[str, Any], step: int) -> float: ...
    def target(self, n: int = 1000, quantile: float = 0.01, seed: int = 12345) -> float: ...
    def for_run(self) -> Problem:
        """The benchmark as one run sees it (a tabular one remembers which entries it used)."""
        ...


@dataclass(frozen=True)
class Benchmark:
    """A minimisation problem over a box, evaluated along steps ``1..FIDELITY.max``."""

    name: str
    bounds: tuple[tuple[float, float], ...]
    fn: Vectorised

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_mapping({
            f"x{i}": {"type": "float", "low": lo, "high": hi}
            for i, (lo, hi) in enumerate(self.bounds)
        })

    def value(self, params: Mapping[str, Any], step: int) -> float:
        x = np.array([[float(params[f"x{i}"]) for i in range(len(self.bounds))]])
        z = math.log(step) / math.log(FIDELITY.max)
        return float(self.fn(x, min(max(z, 0.0), 1.0))[0])

    def step_cost(self, params: Mapping[str, Any], step: int) -> float:
        return 1.0

    def for_run(self) -> Benchmark:
        return self

    def full(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x, 1.0)

    @property
    def optimum(self) -> float:
        return _optimum(self.name)

    def target(self, n: int = 1000, quantile: float = 0.01, seed: int = 12345) -> float:
        """The ``quantile`` of the full-fidelity values of ``n`` random configurations."""
        return _target(self.name, n, quantile, seed)


def _branin(x: np.ndarray, z: float) -> np.ndarray:
    x1, x2 = x[:, 0], x[:, 1]
    b = 5.1 / (4 * math.pi**2) - 0.01 * (1 - z)
    c = 5 / math.pi - 0.1 * (1 - z)
    t = 1 / (8 * math.pi) + 0.05 * (1 - z)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([
    [10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14],
])
_H_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381],
])


def _hartmann6(x: np.ndarray, z: float) -> np.ndarray:
    alpha = _H_ALPHA - 0.1 * (1 - z)
    inner = ((x[:, None, :] - _H_P[None]) ** 2 * _H_A[None]).sum(axis=2)
    return -(alpha[None] * np.exp(-inner)).sum(axis=1)


def _borehole_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rw, r, tu, hu, tl, hl, length, kw = x.T
    lnr = np.log(r / rw)
    high = 2 * math.pi * tu * (hu - hl) / (
        lnr * (1 + 2 * length * tu / (lnr * rw**2 * kw) + tu / tl)
    )
    low = 5 * tu * (hu - hl) / (lnr * (1.5 + 2 * length * tu / (lnr * rw**2 * kw) + tu / tl))
    return high, low


def _borehole(x: np.ndarray, z: float) -> np.ndarray:
    high, low = _borehole_parts(x)
    return -(z * high + (1 - z) * low)


def _park_high(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4 = x.T
    x1 = np.maximum(x1, 1e-6)
    return x1 / 2 * (np.sqrt(1 + (x2 + x3**2) * x4 / x1**2) - 1) + (x1 + 3 * x4) * np.exp(
        1 + np.sin(x3)
    )


def _park(x: np.ndarray, z: float) -> np.ndarray:
    high = _park_high(x)
    x1, x2, x3 = x[:, 0], x[:, 1], x[:, 2]
    low = (1 + np.sin(x1) / 10) * high - 2 * x1 + x2**2 + x3**2 + 0.5
    return -(z * high + (1 - z) * low)


def _currin_high(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    x2 = np.maximum(x2, 1e-12)
    poly = (2300 * x1**3 + 1900 * x1**2 + 2092 * x1 + 60) / (
        100 * x1**3 + 500 * x1**2 + 4 * x1 + 20
    )
    return (1 - np.exp(-1 / (2 * x2))) * poly


def _currin(x: np.ndarray, z: float) -> np.ndarray:
    x1, x2 = x[:, 0], x[:, 1]
    high = _currin_high(x1, x2)
    low = 0.25 * (
        _currin_high(x1 + 0.05, x2 + 0.05) + _currin_high(x1 + 0.05, np.maximum(0, x2 - 0.05))
        + _currin_high(x1 - 0.05, x2 + 0.05) + _currin_high(x1 - 0.05, np.maximum(0, x2 - 0.05))
    )
    return -(z * high + (1 - z) * low)


_CROSS_SCALE = 10.0


def _crossing(x: np.ndarray, z: float) -> np.ndarray:
    final = _hartmann6(x, 1.0)
    goodness = np.clip(-final / 3.32237, 0.0, 1.0)  # 0 for poor configurations, 1 at the optimum
    tau = 1.0 + 8.0 * goodness
    step = FIDELITY.max ** z
    return final + _CROSS_SCALE * np.exp(-step / tau)


_UNIT6 = ((0.0, 1.0),) * 6
_ALL: list[Problem] = [
    Benchmark("branin", ((-5.0, 10.0), (0.0, 15.0)), _branin),
    Benchmark("hartmann6", _UNIT6, _hartmann6),
    Benchmark(
        "borehole",
        ((0.05, 0.15), (100.0, 50000.0), (63070.0, 115600.0), (990.0, 1110.0),
         (63.1, 116.0), (700.0, 820.0), (1120.0, 1680.0), (9855.0, 12045.0)),
        _borehole,
    ),
    Benchmark("park", ((0.0, 1.0),) * 4, _park),
    Benchmark("currin", ((0.0, 1.0),) * 2, _currin),
    Benchmark("crossing", _UNIT6, _crossing),
    TabularBenchmark("digits", DIGITS_TABLE, epochs=FIDELITY.max),
]
BENCHMARKS: dict[str, Problem] = {b.name: b for b in _ALL}

_FUNCTIONS = {name: b for name, b in BENCHMARKS.items() if isinstance(b, Benchmark)}

# Published optima at full fidelity (minimisation form), checked numerically by `_optimum`.
KNOWN_OPTIMA = {"branin": 0.397887, "hartmann6": -3.32237, "currin": -13.7987}


@cache
def _optimum(name: str) -> float:
    """The minimum at full fidelity: published where there is one, else multi-start L-BFGS-B."""
    bench = _FUNCTIONS[name]
    lo = np.array([b[0] for b in bench.bounds])
    hi = np.array([b[1] for b in bench.bounds])
    rng = np.random.default_rng(0)
    starts = lo + rng.random((4000, len(lo))) * (hi - lo)
    values = bench.full(starts)
    best = float(values.min())
    for x0 in starts[np.argsort(values)[:20]]:
        res = minimize(
            lambda u: float(bench.full(u[None])[0]), x0, method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
        )
        best = min(best, float(res.fun))
    return min(best, KNOWN_OPTIMA.get(name, math.inf))


@cache
def _target(name: str, n: int, quantile: float, seed: int) -> float:
    bench = _FUNCTIONS[name]
    lo = np.array([b[0] for b in bench.bounds])
    hi = np.array([b[1] for b in bench.bounds])
    x = lo + np.random.default_rng(seed).random((n, len(lo))) * (hi - lo)
    return float(np.quantile(bench.full(x), quantile))
