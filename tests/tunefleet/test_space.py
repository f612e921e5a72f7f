"""Search spaces: validation of the ``[space]`` table, unit-cube mapping, sampling, configs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.space import (
    PARAM_TYPES,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
)

FAST = settings(max_examples=60, deadline=None)


def param(table: dict[str, Any]) -> Any:
    """The parameter definition that a one-entry ``[space]`` table builds."""
    return SearchSpace.from_mapping({"p": table})["p"]


def check_error(
    exc: pytest.ExceptionInfo[InvalidInputError], field: str, value: Any, *fragments: str
) -> None:
    """The error names ``field``, shows ``value`` and says what is allowed (``fragments``)."""
    err = exc.value
    base: object = err  # one root class, and a ValueError for callers that expect one
    assert isinstance(base, TunefleetError) and isinstance(base, ValueError)
    assert err.field == field
    assert type(err.value) is type(value) and err.value == value
    message = str(err)
    assert message.startswith(f"{field}:"), message
    assert repr(value) in message, message
    assert err.allowed and err.allowed in message
    for fragment in fragments:
        assert fragment in err.allowed, (fragment, err.allowed)


# --- validation -------------------------------------------------------------------------------

FLOAT = {"type": "float", "low": 0.0, "high": 1.0}


@pytest.mark.parametrize(
    ("table", "field", "value", "fragments"),
    [
        pytest.param({**FLOAT, "type": "double"}, "space.lr.type", "double", PARAM_TYPES,
                     id="unknown-type"),
        pytest.param({"low": 0.0, "high": 1.0}, "space.lr.type", None, PARAM_TYPES,
                     id="missing-type"),
        pytest.param({**FLOAT, "type": 3}, "space.lr.type", 3, PARAM_TYPES, id="type-not-str"),
        pytest.param({"type": "float", "high": 1.0}, "space.lr.low", None, ("required",),
                     id="missing-low"),
        pytest.param({"type": "int", "low": 1}, "space.lr.high", None, ("required",),
                     id="missing-high"),
        pytest.param({**FLOAT, "log": True}, "space.lr.low", 0.0, ("> 0", "log"),
                     id="log-low-zero"),
        pytest.param({"type": "float", "low": -1.0, "high": 1.0, "log": True}, "space.lr.low",
                     -1.0, ("> 0",), id="log-low-negative"),
        pytest.param({"type": "int", "low": 0, "high": 8, "log": True}, "space.lr.low", 0,
                     ("> 0",), id="int-log-low-zero"),
        pytest.param({"type": "int", "low": 1.5, "high": 4}, "space.lr.low", 1.5,
                     ("integer",), id="int-low-fraction"),
        pytest.param({"type": "int", "low": 1, "high": 4.5}, "space.lr.high", 4.5,
                     ("integer",), id="int-high-fraction"),
        # before, accepted: the study then failed at submission naming a field "value"
        pytest.param({"type": "int", "low": 0, "high": 1e19}, "space.lr.high", 1e19,
                     ("64-bit",), id="int-high-float-beyond-64-bits"),
        pytest.param({"type": "int", "low": -1e30, "high": 0}, "space.lr.low", -1e30,
                     ("64-bit",), id="int-low-float-beyond-64-bits"),
        pytest.param({**FLOAT, "low": "0.1"}, "space.lr.low", "0.1", ("number",),
                     id="low-string"),
        pytest.param({**FLOAT, "high": True}, "space.lr.high", True, ("number",),
                     id="high-bool"),
        pytest.param({**FLOAT, "high": math.inf}, "space.lr.high", math.inf, ("finite",),
                     id="high-inf"),
        pytest.param({**FLOAT, "log": "yes"}, "space.lr.log", "yes", ("true or false",),
                     id="log-not-bool"),
        pytest.param({**FLOAT, "step": 0.1}, "space.lr.step", 0.1, ("low", "high", "log"),
                     id="unknown-key-float"),
        pytest.param({"type": "categorical", "choices": ["a"], "low": 0}, "space.lr.low", 0,
                     ("choices",), id="unknown-key-categorical"),
        pytest.param({"type": "categorical", "choices": []}, "space.lr.choices", [],
                     ("non-empty",), id="empty-choices"),
        pytest.param({"type": "categorical"}, "space.lr.choices", None, ("non-empty",),
                     id="missing-choices"),
        pytest.param({"type": "categorical", "choices": "relu"}, "space.lr.choices", "relu",
                     ("list",), id="choices-not-list"),
        pytest.param({"type": "categorical", "choices": ["relu", "gelu", "relu"]},
                     "space.lr.choices", "relu", ("distinct",), id="duplicate-str-choice"),
        pytest.param({"type": "categorical", "choices": [1, 2, 1]}, "space.lr.choices", 1,
                     ("distinct",), id="duplicate-int-choice"),
        pytest.param({"type": "categorical", "choices": ["a", None]}, "space.lr.choices", None,
                     ("string", "number", "boolean"), id="choice-of-bad-type"),
        pytest.param(0.1, "space.lr", 0.1, ("table",), id="param-not-table"),
    ],
)
def test_bad_parameter_names_field_value_and_allowed(
    table: Any, field: str, value: Any, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping({"lr": table})
    check_error(exc, field, value, *fragments)


@pytest.mark.parametrize("kind", ["float", "int"])
@pytest.mark.parametrize(("low", "high"), [(1, 1), (5, 2)])
def test_low_must_be_below_high(kind: str, low: int, high: int) -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping({"lr": {"type": kind, "low": low, "high": high}})
    check_error(exc, "space.lr", {"low": low, "high": high}, "low < high")
    assert f"low={low!r}" in str(exc.value) and f"high={high!r}" in str(exc.value)


def test_a_float_range_wider_than_a_double_is_refused() -> None:
    # high - low overflows: every point of the unit interval would map to an end or to NaN
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping({"x": {"type": "float", "low": -1e308, "high": 1e308}})
    check_error(exc, "space.x", {"low": -1e308, "high": 1e308}, "high - low", "finite")
    SearchSpace.from_mapping({"x": {"type": "float", "low": -1e307, "high": 1e307}})  # fits


@pytest.mark.parametrize(
    ("space", "value"),
    [
        pytest.param({}, {}, id="empty"),
        pytest.param([("lr", FLOAT)], [("lr", FLOAT)], id="list"),
        pytest.param("lr", "lr", id="string"),
        pytest.param(None, None, id="none"),
    ],
)
def test_space_must_be_a_non_empty_table(space: Any, value: Any) -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping(space)
    check_error(exc, "space", value, "non-empty table")


@pytest.mark.parametrize("name", ["learning-rate", "1st", "", "a b"])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping({name: FLOAT})
    check_error(exc, "space", name, "identifier")


def test_valid_tables_build_the_right_definitions() -> None:
    space = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "drop": {"type": "float", "low": 0, "high": 1},
        "n": {"type": "int", "low": 2.0, "high": 9},
        "act": {"type": "categorical", "choices": ["relu", 1, 1.0, True]},
    })
    assert list(space) == ["lr", "drop", "n", "act"]  # order is kept
    assert space["lr"] == FloatParam(1e-4, 1e-1, True)
    assert space["drop"] == FloatParam(0.0, 1.0, False)
    assert type(space["drop"].low) is float  # an integer bound of a float param becomes float
    assert space["n"] == IntParam(2, 9, False)
    assert type(space["n"].low) is int  # an integral float bound of an int param becomes int
    # 1, 1.0 and True are equal in Python, but distinct choices here: the type counts.
    assert [type(c) for c in space["act"].choices] == [str, int, float, bool]


def test_space_is_an_immutable_ordered_mapping() -> None:
    table = {"b": FLOAT, "a": {"type": "int", "low": 0, "high": 3}}
    space = SearchSpace.from_mapping(table)
    table["c"] = FLOAT  # changing the source afterwards changes nothing
    assert list(space) == ["b", "a"] and len(space) == 2 and "c" not in space
    same = SearchSpace.from_mapping({"b": FLOAT, "a": {"type": "int", "low": 0, "high": 3}})
    assert space == same and hash(space) == hash(same)
    other = SearchSpace.from_mapping({"b": FLOAT, "a": {"type": "int", "low": 0, "high": 4}})
    assert space != other


def test_parameter_order_defines_the_unit_cube_coordinates() -> None:
    ab = SearchSpace.from_mapping({"a": {"type": "int", "low": 0, "high": 3}, "b": FLOAT})
    ba = SearchSpace.from_mapping({"b": FLOAT, "a": {"type": "int", "low": 0, "high": 3}})
    config = {"a": 1, "b": 0.5}
    assert list(ab.to_unit(config)) == list(reversed(ba.to_unit(config)))
    assert list(ab.to_unit(config)) != list(ba.to_unit(config))
    assert ab.from_unit([0.0, 1.0]) != ba.from_unit([0.0, 1.0])


def test_spaces_that_differ_only_in_order_are_not_equal() -> None:
    ab = SearchSpace.from_mapping({"a": {"type": "int", "low": 0, "high": 3}, "b": FLOAT})
    ba = SearchSpace.from_mapping({"b": FLOAT, "a": {"type": "int", "low": 0, "high": 3}})
    assert not (ab == ba and hash(ab) != hash(ba)), "equal objects must have equal hashes"
    assert ab != ba


def test_nan_choice_is_refused() -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace.from_mapping({"c": {"type": "categorical", "choices": [math.nan, 1.0]}})
    assert exc.value.field == "space.c.choices"


# --- unit-cube mapping -------------------------------------------------------------------------


@FAST
@given(data=st.data())
def test_int_values_round_trip_through_the_unit_interval(
    data: st.DataObject, int_param_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    p = param(data.draw(int_param_strategy))
    assert isinstance(p, IntParam)
    v = data.draw(st.integers(p.low, p.high))
    u = p.to_unit(v)
    assert 0.0 < u < 1.0
    back = p.from_unit(u)
    assert type(back) is int and back == v


@FAST
@given(data=st.data())
def test_int_from_unit_covers_the_ends_and_clips(
    data: st.DataObject, int_param_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    p = param(data.draw(int_param_strategy))
    assert p.from_unit(0.0) == p.low and p.from_unit(1.0) == p.high
    assert p.from_unit(-3.0) == p.low and p.from_unit(7.0) == p.high
    u = data.draw(st.floats(0.0, 1.0))
    assert p.contains(p.from_unit(u))


@FAST
@given(data=st.data())
def test_float_values_round_trip_approximately(
    data: st.DataObject, float_param_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    p = param(data.draw(float_param_strategy))
    assert isinstance(p, FloatParam)
    v = data.draw(st.floats(p.low, p.high))
    u = p.to_unit(v)
    assert -1e-9 <= u <= 1.0 + 1e-9
    back = p.from_unit(u)
    assert type(back) is float and p.contains(back)
    assert math.isclose(back, v, rel_tol=1e-9, abs_tol=1e-9 * (p.high - p.low))


@FAST
@given(data=st.data())
def test_float_from_unit_maps_ends_to_bounds_and_is_monotonic(
    data: st.DataObject, float_param_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    p = param(data.draw(float_param_strategy))
    assert math.isclose(p.from_unit(0.0), p.low, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(p.from_unit(1.0), p.high, rel_tol=1e-9, abs_tol=1e-12)
    assert p.from_unit(-1.0) == p.from_unit(0.0) and p.from_unit(2.0) == p.from_unit(1.0)
    a, b = sorted(data.draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2)))
    assert p.from_unit(a) <= p.from_unit(b)


def test_log_float_spends_equal_unit_length_per_decade() -> None:
    p = FloatParam(1e-4, 1e-1, log=True)
    # Three decades: each takes a third of the unit interval.
    assert math.isclose(p.to_unit(1e-3), 1 / 3) and math.isclose(p.to_unit(1e-2), 2 / 3)
    assert math.isclose(p.from_unit(0.5), math.sqrt(1e-4 * 1e-1))


@FAST
@given(data=st.data())
def test_categorical_values_round_trip_exactly(
    data: st.DataObject, categorical_param_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    p = param(data.draw(categorical_param_strategy))
    assert isinstance(p, CategoricalParam)
    for i, choice in enumerate(p.choices):
        u = p.to_unit(choice)
        assert 0.0 < u < 1.0
        back = p.from_unit(u)
        assert type(back) is type(choice) and back == choice
        assert p.index(choice) == i
    assert p.from_unit(0.0) is p.choices[0] and p.from_unit(1.0) is p.choices[-1]


def test_categorical_index_refuses_values_of_another_type() -> None:
    p = CategoricalParam((1, "1"))
    with pytest.raises(InvalidInputError) as exc:
        p.index(True)
    assert exc.value.value is True
    assert not p.contains(1.0) and not p.contains(True) and p.contains(1) and p.contains("1")


# --- sampling and configurations ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_samples_are_always_in_the_space(
    data: st.DataObject, seed: int, space_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    space = SearchSpace.from_mapping(data.draw(space_strategy))
    rng = np.random.default_rng(seed)
    for _ in range(10):
        config = space.sample(rng)
        assert list(config) == list(space)
        for name, p in space.items():
            assert p.contains(config[name]), (name, p, config[name])
            if isinstance(p, IntParam):
                assert type(config[name]) is int
            elif isinstance(p, FloatParam):
                assert type(config[name]) is float
        space.validate_config(config)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_configs_round_trip_through_the_unit_cube(
    data: st.DataObject, seed: int, space_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    space = SearchSpace.from_mapping(data.draw(space_strategy))
    config = space.sample(np.random.default_rng(seed))
    point = space.to_unit(config)
    assert point.shape == (len(space),)
    back = space.from_unit(point)
    for name, p in space.items():
        if isinstance(p, FloatParam):
            assert math.isclose(back[name], config[name], rel_tol=1e-9,
                                abs_tol=1e-9 * (p.high - p.low))
        else:
            assert type(back[name]) is type(config[name]) and back[name] == config[name]


def test_sample_is_reproducible_from_the_seed() -> None:
    space = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "n": {"type": "int", "low": 1, "high": 1000},
    })
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    c = space.sample(np.random.default_rng(8))
    assert a == b and c != a[0]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_to_mapping_from_mapping_round_trip(
    data: st.DataObject, space_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    space = SearchSpace.from_mapping(data.draw(space_strategy))
    mapping = space.to_mapping()
    again = SearchSpace.from_mapping(mapping)
    assert again == space
    assert again.to_mapping() == mapping
    for name, p in space.items():  # `==` says 1 == True; check the types as well
        q = again[name]
        if isinstance(p, CategoricalParam):
            assert [type(c) for c in q.choices] == [type(c) for c in p.choices]
        else:
            assert type(q) is type(p) and type(q.low) is type(p.low)


SPACE = {
    "lr": {"type": "float", "low": 0.001, "high": 0.1},
    "n": {"type": "int", "low": 2, "high": 8},
    "act": {"type": "categorical", "choices": ["relu", "tanh"]},
}


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace.from_mapping(SPACE)


@pytest.fixture
def good(space: SearchSpace) -> dict[str, Any]:
    config = space.sample(np.random.default_rng(0))
    space.validate_config(config)
    return config


def test_validate_config_refuses_unknown_params(space: SearchSpace, good: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as exc:
        space.validate_config({**good, "momentum": 0.9}, field="trial.params")
    check_error(exc, "trial.params.momentum", 0.9, "not a parameter")
    for name in space:
        assert name in exc.value.allowed


@pytest.mark.parametrize("missing", list(SPACE))
def test_validate_config_refuses_missing_params(
    space: SearchSpace, good: dict[str, Any], missing: str
) -> None:
    config = {k: v for k, v in good.items() if k != missing}
    with pytest.raises(InvalidInputError) as exc:
        space.validate_config(config)
    check_error(exc, f"params.{missing}", None, "missing")


@pytest.mark.parametrize(
    ("name", "value", "fragments"),
    [
        ("lr", 0.5, ("0.001", "0.1")),
        ("lr", 0.0001, ("0.001", "0.1")),
        ("lr", "0.01", ("number",)),
        ("lr", True, ("number",)),
        ("lr", math.nan, ("number",)),
        ("n", 9, ("integer", "2", "8")),
        ("n", 1, ("integer",)),
        ("n", 4.5, ("integer",)),
        ("n", True, ("integer",)),
        ("act", "gelu", ("relu", "tanh")),
        ("act", 0, ("relu", "tanh")),
    ],
)
def test_validate_config_refuses_out_of_range_values(
    space: SearchSpace, good: dict[str, Any], name: str, value: Any, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        space.validate_config({**good, name: value})
    err = exc.value
    assert err.field == f"params.{name}"
    assert err.value is value
    for fragment in fragments:
        assert fragment in err.allowed


@FAST
@given(data=st.data())
def test_validate_config_accepts_exactly_the_values_each_param_contains(
    data: st.DataObject, space_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    space = SearchSpace.from_mapping(data.draw(space_strategy))
    config = space.sample(np.random.default_rng(data.draw(st.integers(0, 2**16))))
    name = data.draw(st.sampled_from(list(space)))
    value = data.draw(st.one_of(st.integers(-(10**7), 10**7), st.floats(), st.text(max_size=3),
                                st.booleans()))
    candidate = {**config, name: value}
    if space[name].contains(value):
        space.validate_config(candidate)
    else:
        with pytest.raises(InvalidInputError) as exc:
            space.validate_config(candidate)
        assert exc.value.field == f"params.{name}"


# --- grids -------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), points=st.integers(1, 12))
def test_grid_points_lie_in_the_space(
    data: st.DataObject, points: int, space_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    space = SearchSpace.from_mapping(data.draw(space_strategy))
    for p in space.values():
        grid = p.grid(points)
        assert grid and all(p.contains(v) for v in grid)
        if isinstance(p, CategoricalParam):
            assert grid == list(p.choices)
        elif isinstance(p, IntParam):
            assert grid == sorted(set(grid)) and len(grid) <= max(points, 1)
            if p.high - p.low + 1 <= points:
                assert grid == list(range(p.low, p.high + 1))
        else:  # each value once, and all ``points`` where the range has room for them
            assert grid == sorted(set(grid)) and len(grid) <= points
            if p.high - p.low > 1e-6 * max(abs(p.low), abs(p.high), 1.0):
                assert len(grid) == points
            if points > 1:
                assert math.isclose(grid[0], p.low, abs_tol=1e-12)
                assert math.isclose(grid[-1], p.high, rel_tol=1e-9)


def test_a_float_grid_too_narrow_for_its_points_has_each_value_once() -> None:
    # before: [1.0, 1.0, 1.0000000000000002, 1.0000000000000004, 1.0000000000000004], so a
    # grid study ran the same configuration twice
    grid = FloatParam(1.0, 1.0000000000000004).grid(5)
    assert grid == [1.0, 1.0000000000000002, 1.0000000000000004]


def test_numpy_scalars_are_numbers_and_numpy_bools_are_not() -> None:
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                      "n": {"type": "int", "low": 1, "high": 8}})
    space.validate_config({"x": np.float32(0.5), "n": np.int64(3)})
    assert space["n"].normalize(np.int64(3)) == 3 and type(space["n"].normalize(np.int64(3))) is int
    assert type(space["x"].normalize(np.float32(0.5))) is float
    for bad in (np.bool_(True), True):
        with pytest.raises(InvalidInputError, match="^params.n: got .*; must be an integer"):
            space.validate_config({"x": 0.5, "n": bad})


@pytest.mark.parametrize("config", [None, [("x", 0.5)], "x=0.5"])
def test_a_config_that_is_not_a_table_is_refused(config: Any) -> None:
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    with pytest.raises(InvalidInputError, match="^params: got .*; must be a table of parameter"):
        space.validate_config(config)


def test_an_integer_beyond_a_double_is_outside_every_numeric_range() -> None:
    # compared exactly, not through float(), which overflowed
    space = SearchSpace.from_mapping({"x": {"type": "float", "low": 0.0, "high": 1.0},
                                      "n": {"type": "int", "low": 1, "high": 8}})
    assert not space["x"].contains(10**400) and not space["n"].contains(10**400)
    assert not space["n"].contains(-(10**400))
    assert space["x"].contains(1) and space["n"].contains(8) and space["n"].contains(8.0)


def test_an_error_shows_at_most_the_ends_of_a_huge_value() -> None:
    err = InvalidInputError("field", "y" * 10_000, "must be short")
    text = str(err)
    assert text.startswith("field: got 'yyy") and text.endswith(
        "yy' (10,002 characters); must be short")
    assert len(text) < 200 and err.value == "y" * 10_000  # the value itself is kept whole
    assert str(InvalidInputError("f", 3, "ok")) == "f: got 3; ok"
    # an int beyond Python's 4,300-digit limit cannot even be turned into text
    assert str(InvalidInputError("f", 10**5000, "ok")) == "f: got <int of about 5,000 digits>; ok"


@pytest.mark.parametrize("log", [False, True])
def test_the_unit_interval_ends_map_to_the_bounds_exactly(log: bool) -> None:
    # before, a log grid's first point was 0.0010000000000000002 for low = 1e-3
    param = FloatParam(1e-3, 1e-1, log)
    assert (param.from_unit(0.0), param.from_unit(1.0)) == (1e-3, 1e-1)
    assert param.from_unit(-0.5) == 1e-3 and param.from_unit(2.0) == 1e-1


# --- the public constructors check what from_mapping checks -----------------------------------

DIRECT_BAD = [
    # (build, the table from_mapping refuses for the same reason, field suffix, value)
    pytest.param(lambda: FloatParam(0.0, 1.0, log=True), {**FLOAT, "log": True}, ".low", 0.0,
                 id="log-low-zero"),  # before: math domain error at the first ask
    pytest.param(lambda: FloatParam(1.0, 0.0), {**FLOAT, "low": 1.0, "high": 0.0}, "",
                 {"low": 1.0, "high": 0.0}, id="reversed"),  # before: always 0.0
    pytest.param(lambda: FloatParam(0.5, 0.5), {**FLOAT, "low": 0.5, "high": 0.5}, "",
                 {"low": 0.5, "high": 0.5}, id="empty-range"),
    pytest.param(lambda: FloatParam(math.nan, 1.0), {**FLOAT, "low": math.nan}, ".low",
                 math.nan, id="nan-low"),
    pytest.param(lambda: FloatParam(0.0, math.inf), {**FLOAT, "high": math.inf}, ".high",
                 math.inf, id="inf-high"),
    pytest.param(lambda: FloatParam("0", 1.0), {**FLOAT, "low": "0"}, ".low", "0",
                 id="string-low"),
    pytest.param(lambda: FloatParam(-1e308, 1e308), {**FLOAT, "low": -1e308, "high": 1e308},
                 "", {"low": -1e308, "high": 1e308}, id="range-beyond-a-double"),
    pytest.param(lambda: FloatParam(0.0, 1.0, log=1), {**FLOAT, "log": 1}, ".log", 1,
                 id="log-not-bool"),
    pytest.param(lambda: IntParam(1, 4.5), {"type": "int", "low": 1, "high": 4.5}, ".high", 4.5,
                 id="int-fraction"),
    pytest.param(lambda: IntParam(0, 2**63), {"type": "int", "low": 0, "high": 2**63}, ".high",
                 2**63, id="int-beyond-64-bits"),
    pytest.param(lambda: IntParam(0, 8, log=True), {"type": "int", "low": 0, "high": 8,
                                                    "log": True}, ".low", 0, id="int-log-zero"),
    pytest.param(lambda: IntParam(5, 2), {"type": "int", "low": 5, "high": 2}, "",
                 {"low": 5, "high": 2}, id="int-reversed"),
    pytest.param(lambda: CategoricalParam(()), {"type": "categorical", "choices": ()},
                 ".choices", (), id="no-choices"),  # before: IndexError at ask
    pytest.param(lambda: CategoricalParam(("a", "a")), {"type": "categorical",
                                                        "choices": ("a", "a")},
                 ".choices", "a", id="duplicate-choice"),
    pytest.param(lambda: CategoricalParam((1.0, math.nan)), {"type": "categorical",
                                                             "choices": (1.0, math.nan)},
                 ".choices", math.nan, id="nan-choice"),
    pytest.param(lambda: CategoricalParam(("a", None)), {"type": "categorical",
                                                         "choices": ("a", None)},
                 ".choices", None, id="choice-of-bad-type"),
    pytest.param(lambda: CategoricalParam("abc"), {"type": "categorical", "choices": "abc"},
                 ".choices", "abc", id="choices-a-string"),
]


@pytest.mark.parametrize(("build", "table", "suffix", "value"), DIRECT_BAD)
def test_public_constructors_refuse_what_from_mapping_refuses_with_its_message(
    build: Any, table: dict[str, Any], suffix: str, value: Any
) -> None:
    with pytest.raises(InvalidInputError) as direct:
        build()
    with pytest.raises(InvalidInputError) as mapped:
        SearchSpace.from_mapping({"p": table})
    kind = {"float": "FloatParam", "int": "IntParam", "categorical": "CategoricalParam"}
    assert direct.value.field == kind[table["type"]] + suffix
    assert mapped.value.field == "space.p" + suffix  # from_mapping still names the entry
    assert direct.value.allowed == mapped.value.allowed
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(direct.value.value)
    else:
        assert direct.value.value == value


def test_a_categorical_param_takes_at_most_max_choices() -> None:
    from tunefleet.space import MAX_CHOICES

    assert len(CategoricalParam(tuple(range(MAX_CHOICES))).choices) == MAX_CHOICES
    with pytest.raises(InvalidInputError, match=r"^CategoricalParam.choices: got '10001 choices'"):
        CategoricalParam(tuple(range(MAX_CHOICES + 1)))


@pytest.mark.parametrize(("params", "field", "fragment"), [
    ({}, "space", "non-empty table"),  # before: numpy reshape errors in TPE and GP
    (None, "space", "non-empty table"),
    ({"x": {"type": "float", "low": 0.0, "high": 1.0}}, "space.x", "FloatParam, IntParam"),
    ({"a b": FloatParam(0.0, 1.0)}, "space", "identifiers"),
    ({1: FloatParam(0.0, 1.0)}, "space", "identifiers"),
])
def test_a_space_built_directly_is_checked(params: Any, field: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        SearchSpace(params)
    assert exc.value.field == field and fragment in exc.value.allowed


def test_valid_direct_constructions_equal_what_from_mapping_builds() -> None:
    direct = SearchSpace({
        "lr": FloatParam(1e-4, 1e-1, True), "drop": FloatParam(0, 1),
        "n": IntParam(2.0, 9.0), "act": CategoricalParam(["relu", "gelu"]),  # type: ignore[arg-type]
    })
    mapped = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "drop": {"type": "float", "low": 0, "high": 1},
        "n": {"type": "int", "low": 2.0, "high": 9.0},
        "act": {"type": "categorical", "choices": ["relu", "gelu"]},
    })
    assert direct == mapped and hash(direct) == hash(mapped)
    # bounds in the parameter's own type, choices as a tuple (so the space hashes)
    assert type(direct["drop"].low) is float  # type: ignore[union-attr]
    assert type(direct["n"].low) is int  # type: ignore[union-attr]
    assert direct["n"].grid(10) == list(range(2, 10))  # before: TypeError, range() of floats
    assert direct["act"] == CategoricalParam(("relu", "gelu"))
    assert direct.to_mapping() == mapped.to_mapping()
