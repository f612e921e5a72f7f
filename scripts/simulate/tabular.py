"""A tabular learning-curve benchmark: the digits MLP of the template, trained for real.

``scripts/make_digits_curves.py`` trained every configuration of a scrambled Sobol design over
the template's search space for 27 epochs and recorded the validation loss and the CPU time of
every epoch (``scripts/data/digits_curves.npz``).

It is a *finite-pool* benchmark: a suggested configuration is mapped to the closest tabulated
configuration in the space's unit cube (categorical parameters must match exactly; the
numeric ones, ``depth`` included, by Euclidean distance), and its step ``t`` returns that
configuration's recorded validation loss after epoch ``t``. The optimum is the best final loss
in the table; the target, as for the functions, is the 1% quantile of the final losses of 1,000
uniformly random configurations (mapped to the pool the same way).

A step costs the configuration's median CPU time per epoch divided by the mean of that median
over the table, so the compute of a run is in "epochs of an average configuration" and
``compute / 27`` in average full-fidelity evaluations: wide, deep, small-batch networks cost
more than narrow ones, as they do on a real machine.
"""

from __future__ import annotations

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
        key = tuple(params[name] for name in self.space)
        i = self._nearest.get(key)
        if i is None:
            i = int(self.index_of_units(self.space.to_unit(params))[0])
            self._nearest[key] = i
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
