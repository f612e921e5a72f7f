"""Protobuf conversions: round trips for values, params and study specs, and refusals."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunefleet.errors import InvalidInputError
from tunefleet.serde import (
    params_from_proto,
    params_to_proto,
    spec_from_proto,
    spec_to_proto,
    value_from_proto,
    value_to_proto,
)
from tunefleet.study import StudySpec
from tunefleet.v1 import common_pb2, node_pb2

INT64 = st.integers(-(2**63), 2**63 - 1)
DIGESTS = st.text("0123456789abcdef", min_size=64, max_size=64)
GOOD_DIGEST = "ab" * 32


def typed(obj: Any) -> Any:
    """``obj`` with every scalar replaced by ``(type name, value)``, for type-exact equality.

    ``1 == 1.0 == True`` in Python, so ``==`` alone cannot tell that a conversion turned a bool
    into an int or an int into a float; comparing ``typed(a) == typed(b)`` can.
    """
    if isinstance(obj, dict):
        return {k: typed(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [typed(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return ("float", "nan")
    return (type(obj).__name__, obj)


def wire(message: Any) -> Any:
    """``message`` after serialization and parsing, as the other party sees it."""
    return type(message).FromString(message.SerializeToString())


# --- values ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.booleans(), INT64, st.floats(), st.text()))
def test_values_round_trip_with_their_type(value: Any) -> None:
    back = value_from_proto(wire(value_to_proto(value)))
    assert typed(back) == typed(value)
    if isinstance(value, float) and value == 0:
        assert math.copysign(1.0, back) == math.copysign(1.0, value)  # -0.0 stays -0.0


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, "bool_value"), (False, "bool_value"), (0, "int_value"), (1, "int_value"),
     (0.0, "float_value"), (1.0, "float_value"), ("", "string_value"), ("1", "string_value")],
)
def test_each_type_uses_its_own_oneof_case(value: Any, kind: str) -> None:
    # Values that are equal in Python (True == 1 == 1.0) must not share a wire representation.
    message = value_to_proto(value)
    assert message.WhichOneof("kind") == kind
    assert type(value_from_proto(message)) is type(value)


def test_an_empty_value_reads_as_none() -> None:
    assert value_from_proto(common_pb2.ParamValue()) is None


@pytest.mark.parametrize("value", [None, [1], b"x", {"a": 1}, 1j])
def test_unsupported_values_are_refused(value: Any) -> None:
    with pytest.raises(InvalidInputError) as exc:
        value_to_proto(value)
    assert exc.value.field == "value" and exc.value.value is value


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_ints_outside_int64_are_refused_clearly(value: int) -> None:
    with pytest.raises(InvalidInputError):
        value_to_proto(value)


# --- params ------------------------------------------------------------------------------------

PARAMS = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.booleans(), INT64, st.floats(), st.text(max_size=10)),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(params=PARAMS)
def test_params_round_trip_through_a_proto_map(params: dict[str, Any]) -> None:
    message = node_pb2.Assignment()
    params_to_proto(params, message.params)
    assert set(message.params) == set(params)
    back = params_from_proto(wire(message).params)
    assert typed(back) == typed(params)


def test_params_to_proto_overwrites_existing_entries() -> None:
    message = node_pb2.Assignment()
    params_to_proto({"x": 1, "y": "a"}, message.params)
    params_to_proto({"x": True}, message.params)
    assert typed(params_from_proto(message.params)) == typed({"x": True, "y": "a"})


def test_params_from_proto_refuses_an_entry_without_a_value() -> None:
    message = node_pb2.Assignment()
    params_to_proto({"lr": 0.1}, message.params)
    message.params["hidden"].SetInParent()  # present, but no oneof case set
    with pytest.raises(InvalidInputError) as exc:
        params_from_proto(message.params)
    assert exc.value.field == "params.hidden" and exc.value.value is None


def test_params_to_proto_refuses_unsupported_values() -> None:
    message = node_pb2.Assignment()
    with pytest.raises(InvalidInputError):
        params_to_proto({"x": None}, message.params)  # type: ignore[dict-item]


# --- study specs -------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(data=st.data(), digest=DIGESTS)
def test_spec_round_trips_through_proto(
    data: st.DataObject, digest: str, wire_study_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    spec = StudySpec.from_mapping(data.draw(wire_study_strategy))
    message = spec_to_proto(spec, digest)
    back, back_digest = spec_from_proto(wire(message))
    assert back_digest == digest
    assert back == spec
    # `==` treats 1, 1.0 and True alike: check that no bound or choice changed type.
    assert typed(back.to_mapping()) == typed(spec.to_mapping())
    assert list(back.space) == list(spec.space)  # parameter order is kept


def test_the_local_bundle_directory_stays_on_the_client() -> None:
    spec = StudySpec.from_mapping({
        "name": "s", "bundle": "../elsewhere", "objective": {"metric": "loss"},
        "budget": {"max_trials": 2}, "space": {"x": {"type": "float", "low": 0, "high": 1}},
    })
    back, _ = spec_from_proto(wire(spec_to_proto(spec, GOOD_DIGEST)))
    default_bundle = StudySpec.__dataclass_fields__["bundle"].default
    assert back.bundle == default_bundle
    assert back == dataclasses.replace(spec, bundle=default_bundle)


@pytest.mark.parametrize("max_running", [None, 2])
def test_an_unset_budget_round_trips_as_unset(max_running: int | None) -> None:
    search: dict[str, object] = {"searcher": "grid"}
    if max_running is not None:
        search["max_running"] = max_running
    spec = StudySpec.from_mapping({
        "name": "g", "objective": {"metric": "loss"}, "search": search,
        "space": {"n": {"type": "int", "low": 0, "high": 3}},
    })
    message = spec_to_proto(spec, GOOD_DIGEST)
    assert message.HasField("budget") and not message.budget.HasField("max_trials")
    assert message.search.HasField("max_running") is (max_running is not None)
    back, _ = spec_from_proto(wire(message))
    assert back.budget.max_trials is None and back == spec
    assert back.search.max_running == max_running


def _message() -> common_pb2.StudySpec:
    spec = StudySpec.from_mapping({
        "name": "s", "objective": {"metric": "loss", "mode": "max"},
        "budget": {"max_trials": 5},
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "n": {"type": "int", "low": 1, "high": 9},
        },
    })
    return spec_to_proto(spec, GOOD_DIGEST)


@pytest.mark.parametrize(
    "digest",
    ["", "ab" * 31, "ab" * 33, "AB" * 32, "g" + "a" * 63, " " + "a" * 63, "a" * 63 + "\n"],
)
def test_a_bad_digest_is_refused(digest: str) -> None:
    message = _message()
    message.bundle_digest = digest
    with pytest.raises(InvalidInputError) as exc:
        spec_from_proto(message)
    assert exc.value.field == "bundle_digest" and exc.value.value == digest
    assert "sha256" in exc.value.allowed


def test_spec_to_proto_keeps_the_digest_it_is_given() -> None:
    message = _message()
    assert message.bundle_digest == GOOD_DIGEST
    assert spec_from_proto(message)[1] == GOOD_DIGEST


def test_a_duplicated_parameter_name_is_refused() -> None:
    message = _message()
    first = message.space[0]
    duplicate = message.space.add()
    duplicate.CopyFrom(first)
    duplicate.high.float_value = 2.0  # even with a different definition
    with pytest.raises(InvalidInputError) as exc:
        spec_from_proto(wire(message))
    assert exc.value.field == f"space.{first.name}"
    assert "twice" in exc.value.allowed


def _set_searcher(m: common_pb2.StudySpec) -> None:
    m.search.searcher = "bayes"


def _clear_name(m: common_pb2.StudySpec) -> None:
    m.name = ""


def _clear_low(m: common_pb2.StudySpec) -> None:
    m.space[0].ClearField("low")


def _string_bound(m: common_pb2.StudySpec) -> None:
    m.space[1].high.string_value = "9"


def _bad_type(m: common_pb2.StudySpec) -> None:
    m.space[0].type = "double"


def _bad_mode(m: common_pb2.StudySpec) -> None:
    m.objective.mode = ""


def _zero_eta(m: common_pb2.StudySpec) -> None:
    m.fidelity.eta = 0


def _bad_entrypoint(m: common_pb2.StudySpec) -> None:
    m.entrypoint = "../../etc/x.py"


def _no_space(m: common_pb2.StudySpec) -> None:
    del m.space[:]


def _choices_on_a_float(m: common_pb2.StudySpec) -> None:
    m.space[0].choices.add().float_value = 0.5


def _bounds_on_a_categorical(m: common_pb2.StudySpec) -> None:
    m.space[0].type = "categorical"
    m.space[0].ClearField("high")
    m.space[0].choices.add().string_value = "a"  # low stays set, which a categorical refuses


def _log_on_a_categorical(m: common_pb2.StudySpec) -> None:
    m.space[0].type = "categorical"
    m.space[0].ClearField("low")
    m.space[0].ClearField("high")
    m.space[0].choices.add().string_value = "a"
    m.space[0].log = True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # before, fields the parameter's type does not take were dropped without a word,
        # and the stored spec still had them
        (_choices_on_a_float, "space.x.choices"),
        (_bounds_on_a_categorical, "space.x.low"),
        (_log_on_a_categorical, "space.x.log"),
        (_set_searcher, "search.searcher"),
        (_clear_name, "name"),
        (_clear_low, "space.x.low"),
        (_string_bound, "space.n.high"),
        (_bad_type, "space.x.type"),
        (_bad_mode, "objective.mode"),
        (_zero_eta, "fidelity.eta"),
        (_bad_entrypoint, "entrypoint"),
        (_no_space, "space"),
    ],
)
def test_a_malformed_message_gets_the_study_file_validation(change: Any, field: str) -> None:
    message = _message()
    spec_from_proto(message)  # valid before the change
    change(message)
    with pytest.raises(InvalidInputError) as exc:
        spec_from_proto(wire(message))
    assert exc.value.field == field


def test_enqueued_configurations_round_trip_through_proto_with_their_types() -> None:
    spec = StudySpec.from_mapping({
        "name": "s", "objective": {"metric": "loss"}, "budget": {"max_trials": 4},
        "search": {"enqueue": [{"x": 0.5, "n": 3, "act": True}, {"x": 1, "n": 1, "act": False}]},
        "space": {"x": {"type": "float", "low": 0, "high": 1},
                  "n": {"type": "int", "low": 1, "high": 4},
                  "act": {"type": "categorical", "choices": [True, False]}},
    })
    back, _ = spec_from_proto(wire(spec_to_proto(spec, GOOD_DIGEST)))
    assert back == spec
    assert typed(back.to_mapping()) == typed(spec.to_mapping())
    assert [type(c["x"]) for c in back.search.enqueue] == [float, float]


def test_an_enqueued_configuration_off_the_wire_is_checked_like_a_study_file() -> None:
    spec = StudySpec.from_mapping({
        "name": "s", "objective": {"metric": "loss"}, "budget": {"max_trials": 4},
        "search": {"enqueue": [{"x": 0.5}]},
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
    })
    message = spec_to_proto(spec, GOOD_DIGEST)
    message.search.enqueue[0].params["x"].float_value = 7.0
    with pytest.raises(InvalidInputError, match=r"search.enqueue\[0\].x: got 7.0"):
        spec_from_proto(wire(message))
    message.search.enqueue[0].params["x"].Clear()  # present without a value
    with pytest.raises(InvalidInputError, match=r"search.enqueue\[0\].x: got None"):
        spec_from_proto(wire(message))


def test_gpu_hour_budgets_and_deadlines_round_trip_through_proto() -> None:
    spec = StudySpec.from_mapping({
        "name": "s", "objective": {"metric": "loss"},
        "budget": {"max_gpu_hours": 1.5, "deadline": "2026-12-01T18:00:00Z", "max_credits": 9},
        "resources": {"gpus": 1},
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
    })
    back, _ = spec_from_proto(wire(spec_to_proto(spec, GOOD_DIGEST)))
    assert back == spec
    assert (back.budget.max_trials, back.budget.max_gpu_hours, back.budget.deadline,
            back.budget.max_credits) == (None, 1.5, 1796148000.0, 9.0)
