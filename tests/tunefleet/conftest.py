"""Hypothesis strategies shared by the tests of the ``tunefleet`` package.

The strategies build *plain mappings* (what a study file holds), valid by construction, so
tests can feed them to :meth:`SearchSpace.from_mapping` / :meth:`StudySpec.from_mapping`.
They are served through session-scoped fixtures (usable with ``st.data()``), which keeps every
test module self-contained without importing one test module from another.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from tunefleet.study import SCHEDULERS, SEARCHERS

# Identifiers, so they are valid parameter and metric names.
identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def float_param_tables(draw: st.DrawFn) -> dict[str, Any]:
    log = draw(st.booleans())
    if log:
        low = draw(st.floats(min_value=1e-6, max_value=1e3))
        high = low * draw(st.floats(min_value=1.01, max_value=1e6))
    else:
        low = draw(st.floats(min_value=-1e6, max_value=1e6))
        high = low + draw(st.floats(min_value=1e-3, max_value=1e6))
    table: dict[str, Any] = {"type": "float", "low": low, "high": high}
    if log or draw(st.booleans()):  # `log` is optional when false
        table["log"] = log
    return table


@st.composite
def int_param_tables(draw: st.DrawFn) -> dict[str, Any]:
    log = draw(st.booleans())
    low = draw(st.integers(1, 10**6) if log else st.integers(-(10**6), 10**6))
    high = low + draw(st.integers(1, 10**6))
    table: dict[str, Any] = {"type": "int", "low": low, "high": high}
    if log or draw(st.booleans()):
        table["log"] = log
    return table


# Finite numbers, strings and booleans; distinct by (type, value), as the space requires.
choice_values = st.one_of(
    st.text(max_size=8),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def _choice_key(value: Any) -> tuple[type, Any]:
    return (type(value), value)


categorical_param_tables = st.builds(
    lambda choices: {"type": "categorical", "choices": choices},
    st.lists(choice_values, min_size=1, max_size=6, unique_by=_choice_key),
)

param_tables = st.one_of(float_param_tables(), int_param_tables(), categorical_param_tables)
space_tables = st.dictionaries(identifiers, param_tables, min_size=1, max_size=6)


@st.composite
def study_tables(draw: st.DrawFn, bundle: str | None = None) -> dict[str, Any]:
    """A valid study-file mapping. ``bundle`` fixes the bundle directory (``None``: any)."""
    searcher = draw(st.sampled_from(SEARCHERS))
    max_trials = draw(st.none() | st.integers(1, 1_000_000)) if searcher == "grid" else draw(
        st.integers(1, 1_000_000)
    )
    max_running = draw(st.none() | st.integers(1, 100_000))
    fid_min = draw(st.integers(1, 10**6))
    fid_max = fid_min + draw(st.integers(0, 10**6))
    data: dict[str, Any] = {
        "name": draw(st.text(min_size=1, max_size=100).filter(lambda s: s.strip() != "")),
        "bundle": bundle if bundle is not None else draw(
            st.from_regex(r"[a-z.][a-z0-9_/.]{0,20}", fullmatch=True)
        ),
        "entrypoint": draw(st.from_regex(r"([a-z][a-z0-9_]{0,6}/){0,2}[a-z_]{1,8}\.py",
                                         fullmatch=True)),
        "objective": {"metric": draw(identifiers), "mode": draw(st.sampled_from(["min", "max"]))},
        "budget": {} if max_trials is None else {"max_trials": max_trials},
        "search": {
            "searcher": searcher,
            "scheduler": draw(st.sampled_from(SCHEDULERS)),
            "seed": draw(st.integers(0, 2**63 - 1)),
            **({} if max_running is None else {"max_running": max_running}),
        },
        "fidelity": {"min": fid_min, "max": fid_max, "eta": draw(st.integers(2, 100))},
        "space": draw(space_tables),
        "resources": {
            "gpus": draw(st.integers(0, 64)),
            "min_gpu_memory_gb": draw(
                st.floats(min_value=0, max_value=1e4) | st.integers(0, 1000)
            ),
        },
    }
    return data


@pytest.fixture(scope="session")
def space_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return space_tables


@pytest.fixture(scope="session")
def study_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return study_tables()


@pytest.fixture(scope="session")
def wire_study_strategy() -> st.SearchStrategy[dict[str, Any]]:
    """Studies as they travel: the local ``bundle`` directory stays on the client."""
    return study_tables(bundle=".")


@pytest.fixture(scope="session")
def float_param_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return float_param_tables()


@pytest.fixture(scope="session")
def int_param_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return int_param_tables()


@pytest.fixture(scope="session")
def categorical_param_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return categorical_param_tables
