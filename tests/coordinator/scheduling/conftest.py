"""Shared fixtures of the scheduling tests: a mixed search space and a toy objective."""

from __future__ import annotations

import pytest

from tunefleet.space import SearchSpace
from tunefleet.study import Fidelity


@pytest.fixture
def mixed_space() -> SearchSpace:
    return SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "activation": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
    })


@pytest.fixture
def fidelity() -> Fidelity:
    return Fidelity(min=1, max=9, eta=3)
