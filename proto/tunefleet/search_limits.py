"""How large a search a coordinator takes on: the rules researchers' clients check before they
upload anything, and the coordinator again at submission.

A grid is enumerated in memory, and a GP's cost per suggestion grows with its inputs.
"""

from __future__ import annotations

import math

from tunefleet.errors import InvalidInputError
from tunefleet.space import CategoricalParam, SearchSpace
from tunefleet.study import StudySpec

__all__ = ["GRID_POINTS", "MAX_GP_COLUMNS", "MAX_GRID_POINTS", "check_search_limits",
           "gp_input_columns", "grid_size"]

GRID_POINTS = 5  # values of a float range (or of an int range wider than this) in a grid
MAX_GRID_POINTS = 1_000_000
MAX_GP_COLUMNS = 64  # the GP's inputs: one per numeric parameter, one per categorical choice


def grid_size(space: SearchSpace, points: int = GRID_POINTS) -> int:
    """How many combinations the grid of ``space`` has, without building it."""
    return math.prod(len(space[name].grid(points)) for name in space)


def gp_input_columns(space: SearchSpace) -> int:
    """How many inputs a GP over ``space`` has: one per numeric parameter, one per choice of
    each categorical one."""
    return sum(len(p.choices) if isinstance(p, CategoricalParam) else 1 for p in space.values())


def check_search_limits(spec: StudySpec) -> None:
    """Raise :class:`InvalidInputError`, naming ``search.searcher``, for a grid of more than
    :data:`MAX_GRID_POINTS` points or a GP of more than :data:`MAX_GP_COLUMNS` inputs."""
    if spec.search.searcher == "grid":
        size = grid_size(spec.space)
        if size > MAX_GRID_POINTS:
            raise InvalidInputError(
                "search.searcher", "grid",
                f"the grid of this space has {size:.3g} points, at most {MAX_GRID_POINTS} "
                "are allowed; use random or tpe, or fewer parameters",
            )
    if spec.search.searcher == "gp":
        columns = gp_input_columns(spec.space)
        if columns > MAX_GP_COLUMNS:
            raise InvalidInputError(
                "search.searcher", "gp",
                f"the GP's input for this space has {columns} columns (one per numeric "
                f"parameter, one per categorical choice), at most {MAX_GP_COLUMNS} are "
                "allowed (its memory grows with them); use tpe, or fewer choices",
            )
