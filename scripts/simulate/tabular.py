"""A tabular learning-curve benchmark: the digits MLP of the template, trained for real.

``scripts/make_digits_curves.py`` trained every configuration of a scrambled Sobol design over
the template's search space for 27 epochs and recorded the validation loss and the CPU time of
every epoch (``scripts/data/digits_curves.npz``).

It is a *finite-pool* benchmark: a suggested configuration is mapped to the closest tabulated
configuration in the space's unit cube (categorical parameters must match exactly; the
numeric ones, ``depth`` included, by Euclidean distance) that this run has not used yet, and
its step ``t`` returns that configuration's recorded validation loss after epoch ``t``. The
same suggested configuration always maps to the same entry, but two different suggestions
never share one (:meth:`TabularBenchmark.for_run` holds that state): in the real, continuous
space they would be different networks, whereas the pool is coarse (4,096 points in 7
dimensions), so without this every search that homes in on a region would re-train one
tabulated network over and over. The optimum is the best final loss in the table; the target,
as for the functions, is the 1% quantile of the final losses of 1,000 uniformly random
configurations (each mapped to its closest entry).

A step costs the configuration's median CPU time per epoch divided by the mean of that median
over the table, so the compute of a run is in "epochs of an average configuration" and
``compute / 27`` in average full-fidelity evaluations: wide, deep, small-batch networks cost
more than narrow ones, as they do on a real machine.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from tunefleet.space import CategoricalParam, SearchSpace

__all__ = ["TabularBenchmark", "DIGITS_TABLE"]

DIGITS_TABLE = Path(__file__).resolve().parent.parent / "data" / "digits_curves.npz"

# Categorical coordinates are stretched so that any categorical mismatch is farther than the
# farthest numeric neighbour (the numeric part of the cube has a diameter below 3).
_CATEGORICAL_STRETCH = 10.0


class TabularBenchmark:
    """Learning curves read from a table (values minimised), over a finite pool of configs."""

    def __init__(self, name: str, path: Path, epochs: int = 27) -> None:
        self.name = name
        self.path = path
        self.epochs = epochs
        self._nearest: dict[tuple[Any, ...], int] = {}
        self._used: set[int] = set()

    def for_run(self) -> TabularBenchmark:
        """A view of the table for one run: it remembers which entries the run has used."""
        view = copy.copy(self)
        view._nearest, view._used = {}, set()
        return view

    @cached_property
    def _data(self) -> dict[str, np.ndarray]:
        if not self.path.exists():
            raise FileNotFoundError(
                f"{self.path} is missing; build it with scripts/make_digits_curves.py"
            )
        with np.load(self.path) as table:
            data = {key: table[key] for key in table.files}
        if data["val_loss"].shape[1] < self.epochs:
            raise ValueError(
                f"{self.path} has {data['val_loss'].shape[1]} epochs, but {self.epochs} are needed"
            )
        return data

    @cached_property
    def space(self) -> SearchSpace:
        return SearchSpace.from_mapping(json.loads(str(self._data["space"])))

    @cached_property
    def _scale(self) -> np.ndarray:
        return np.array([
            _CATEGORICAL_STRETCH if isinstance(self.space[name], CategoricalParam) else 1.0
            for name in self.space
        ])

    @cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(self._data["unit"].astype(float) * self._scale)

    @cached_property
    def curves(self) -> np.ndarray:
        """Validation loss, shape ``(configurations, epochs)``."""
        return self._data["val_loss"][:, : self.epochs].astype(float)

    @cached_property
    def costs(self) -> np.ndarray:
        """Cost of one epoch of each configuration, relative to the table's mean."""
        seconds = self._data["epoch_cpu_seconds"][:, : self.epochs].astype(float)
        per_config = np.median(seconds, axis=1)
        return np.asarray(per_config / per_config.mean())

    def __len__(self) -> int:
        return len(self.curves)

    def index_of_units(self, units: np.ndarray) -> np.ndarray:
        """The pool index closest to each row of ``units`` (points of the unit cube)."""
        _, index = self._tree.query(np.atleast_2d(units) * self._scale)
        return np.asarray(index, dtype=int)

    def index(self, params: Mapping[str, Any]) -> int:
        """The entry of ``params``: its closest entry that no other configuration has taken."""
        key = tuple(params[name] for name in self.space)
        i = self._nearest.get(key)
        if i is None:
            point = self.space.to_unit(params) * self._scale
            k = min(len(self), 16)
            while True:
                _, near = self._tree.query(point, k=k)
                free = [int(j) for j in np.atleast_1d(near) if int(j) not in self._used]
                if free or k >= len(self):
                    break
                k = min(len(self), 4 * k)
            if not free:
                raise ValueError(f"{self.name}: all {len(self)} configurations are used")
            i = free[0]
            self._nearest[key] = i
            self._used.add(i)
        return i

    def value(self, params: Mapping[str, Any], step: int) -> float:
        step = min(max(int(step), 1), self.epochs)
        return float(self.curves[self.index(params), step - 1])

    def step_cost(self, params: Mapping[str, Any], step: int) -> float:
        return float(self.costs[self.index(params)])

    @property
    def optimum(self) -> float:
        return float(self.curves[:, -1].min())

    def target(self, n: int = 1000, quantile: float = 0.01, seed: int = 12345) -> float:
        """The ``quantile`` of the final values of ``n`` uniformly random configurations."""
        draws = np.random.default_rng(seed).random((n, len(self.space)))
        units = np.array([self.space.to_unit(self.space.from_unit(u)) for u in draws])
        finals = self.curves[self.index_of_units(units), -1]
        return float(np.quantile(finals, quantile))
