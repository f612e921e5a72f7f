"""The search-size rules that clients check before uploading and the coordinator at submission."""

from __future__ import annotations

import pytest

from coordinator.scheduling import check_available
from coordinator.scheduling._gp import GPSearcher
from coordinator.scheduling._grid import GridSearcher
from tunefleet.errors import InvalidInputError
from tunefleet.search_limits import check_search_limits, gp_input_columns, grid_size
from tunefleet.space import SearchSpace
from tunefleet.study import StudySpec

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "depth": {"type": "int", "low": 1, "high": 3},
         "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh", "silu"]},
         "bn": {"type": "categorical", "choices": [True]}}


def test_the_sizes_are_those_of_the_searchers_themselves() -> None:
    space = SearchSpace.from_mapping(SPACE)
    assert grid_size(space) == GridSearcher(space, seed=1).size == 5 * 3 * 4 * 1
    assert gp_input_columns(space) == GPSearcher.input_columns(space) == 1 + 1 + 4 + 1


@pytest.mark.parametrize("searcher, space, fragment", [
    ("grid", {f"p{i}": {"type": "int", "low": 0, "high": 100} for i in range(9)},
     r"the grid of this space has 1.95e\+06 points"),
    ("gp", {"c": {"type": "categorical", "choices": list(range(65))}},
     "the GP's input for this space has 65 columns"),
])
def test_a_search_too_large_is_refused_by_the_client_and_the_coordinator_alike(
        searcher: str, space: dict[str, object], fragment: str) -> None:
    spec = StudySpec.from_mapping({"name": "big", "objective": {"metric": "loss"},
                                   "budget": {"max_trials": 3},
                                   "search": {"searcher": searcher}, "space": space})
    for check in (check_search_limits, check_available):
        with pytest.raises(InvalidInputError, match=f"^search.searcher: got '{searcher}'; "
                           f"{fragment}"):
            check(spec)
