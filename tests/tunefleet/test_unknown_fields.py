"""Unknown fields of received messages are found wherever they sit, and refused by name."""

from __future__ import annotations

import pytest

from tunefleet.errors import InvalidInputError
from tunefleet.unknown_fields import refuse_unknown_fields, unknown_field_paths
from tunefleet.v1 import common_pb2


def _length_delimited(field: int, payload: bytes) -> bytes:
    return bytes([(field << 3) | 2, len(payload)]) + payload


UNKNOWN_7 = b"\x38\x01"  # field 7, varint 1: unknown to Config, ParamValue and Budget alike


def test_a_known_message_has_none() -> None:
    spec = common_pb2.StudySpec(name="s", budget=common_pb2.Budget(max_trials=3))
    spec.search.enqueue.add().params["x"].float_value = 0.5
    message = common_pb2.StudySpec.FromString(spec.SerializeToString())
    assert unknown_field_paths(message) == []
    refuse_unknown_fields(message, "spec")  # returns quietly


def test_top_level_nested_repeated_and_map_entries_are_found() -> None:
    spec = common_pb2.StudySpec(name="s")
    wire = spec.SerializeToString()
    wire += b"\xa8\x06\x01"  # field 101 at the top
    wire += _length_delimited(5, b"\x48\x05")  # budget, field 9
    config = _length_delimited(1, b"\x0a\x01x" + _length_delimited(2, UNKNOWN_7))  # params["x"]
    wire += _length_delimited(6, _length_delimited(5, config))  # search.enqueue[0]
    wire += _length_delimited(6, _length_delimited(5, UNKNOWN_7))  # search.enqueue[1]
    message = common_pb2.StudySpec.FromString(wire)
    assert sorted(unknown_field_paths(message)) == sorted([
        "101", "budget.9", "search.enqueue[0].params[x].7", "search.enqueue[1].7",
    ])


def test_refusal_names_the_field_and_the_numbers() -> None:
    message = common_pb2.StudySpec.FromString(_length_delimited(5, b"\x48\x05"))
    with pytest.raises(InvalidInputError) as info:
        refuse_unknown_fields(message, "spec")
    assert info.value.field == "spec"
    assert "budget.9" in str(info.value) and "upgrade the coordinator" in str(info.value)
