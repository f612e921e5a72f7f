"""Conversions between protobuf messages and tunefleet's Python objects.

Each pair ``x_to_proto`` / ``x_from_proto`` is a round trip. Conversions *from* protobuf that
build a study run the same validation as the study file (:meth:`StudySpec.from_mapping`), so a
malformed message raises :class:`~tunefleet.errors.InvalidInputError` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from tunefleet.errors import InvalidInputError
from tunefleet.space import ParamValue
from tunefleet.study import StudySpec
from tunefleet.v1 import common_pb2

__all__ = [
    "value_to_proto",
    "value_from_proto",
    "params_to_proto",
    "params_from_proto",
    "spec_to_proto",
    "spec_from_proto",
]


def value_to_proto(value: ParamValue) -> common_pb2.ParamValue:
    if isinstance(value, bool):
        return common_pb2.ParamValue(bool_value=value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidInputError("value", value, "must fit in a signed 64-bit integer")
        return common_pb2.ParamValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.ParamValue(float_value=value)
    if isinstance(value, str):
        return common_pb2.ParamValue(string_value=value)
    raise InvalidInputError("value", value, "must be a number, string or boolean")


def value_from_proto(message: common_pb2.ParamValue) -> ParamValue | None:
    """The Python value, or ``None`` when no kind is set."""
    kind = message.WhichOneof("kind")
    if kind is None:
        return None
    value: ParamValue = getattr(message, kind)
    return value


def params_to_proto(
    params: Mapping[str, ParamValue], target: MutableMapping[str, common_pb2.ParamValue]
) -> None:
    """Fill a protobuf ``map<string, ParamValue>`` field from ``params``."""
    for name, value in params.items():
        target[name].CopyFrom(value_to_proto(value))


def params_from_proto(source: Mapping[str, common_pb2.ParamValue]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for name, message in source.items():
        value = value_from_proto(message)
        if value is None:
            raise InvalidInputError(f"params.{name}", None, "must have a value")
        out[name] = value
    return out


def spec_to_proto(spec: StudySpec, bundle_digest: str) -> common_pb2.StudySpec:
    message = common_pb2.StudySpec(
        name=spec.name,
        bundle_digest=bundle_digest,
        entrypoint=spec.entrypoint,
        objective=common_pb2.Objective(metric=spec.objective.metric, mode=spec.objective.mode.value),
        search=common_pb2.SearchSettings(
            searcher=spec.search.searcher, scheduler=spec.search.scheduler, seed=spec.search.seed
        ),
        fidelity=common_pb2.Fidelity(
            min=spec.fidelity.min, max=spec.fidelity.max, eta=spec.fidelity.eta
        ),
        resources=common_pb2.Resources(
            gpus=spec.resources.gpus, min_gpu_memory_gb=spec.resources.min_gpu_memory_gb
        ),
        verification=common_pb2.Verification(
            fraction=spec.verification.fraction, tolerance=spec.verification.tolerance,
            best=spec.verification.best,
        ),
    )
    message.budget.SetInParent()
    if spec.budget.max_trials is not None:
        message.budget.max_trials = spec.budget.max_trials
    if spec.budget.max_gpu_hours is not None:
        message.budget.max_gpu_hours = spec.budget.max_gpu_hours
    if spec.budget.deadline is not None:
        message.budget.deadline = spec.budget.deadline
    if spec.budget.max_credits is not None:
        message.budget.max_credits = spec.budget.max_credits
    if spec.search.max_running is not None:
        message.search.max_running = spec.search.max_running
    for config in spec.search.enqueue:
        params_to_proto(config, message.search.enqueue.add().params)
    for name, table in spec.space.to_mapping().items():
        param = message.space.add(name=name, type=table["type"])
        if table["type"] == "categorical":
            for choice in table["choices"]:
                param.choices.add().CopyFrom(value_to_proto(choice))
        else:
            param.low.CopyFrom(value_to_proto(table["low"]))
            param.high.CopyFrom(value_to_proto(table["high"]))
            param.log = table["log"]
    return message


def spec_mapping_from_proto(message: common_pb2.StudySpec) -> dict[str, Any]:
    """The study-file mapping a message describes (not yet validated)."""
    space: dict[str, Any] = {}
    for param in message.space:
        if param.name in space:
            raise InvalidInputError(f"space.{param.name}", param.name, "appears twice")
        # every field that is set goes to the study file's parser, which refuses those the
        # parameter's type does not take (a float's choices, a categorical's low or log)
        table: dict[str, Any] = {"type": param.type}
        if param.type == "categorical" or param.choices:
            table["choices"] = [value_from_proto(c) for c in param.choices]
        if param.HasField("low"):
            table["low"] = value_from_proto(param.low)
        if param.HasField("high"):
            table["high"] = value_from_proto(param.high)
        if param.type != "categorical" or param.log:
            table["log"] = param.log
        space[param.name] = table
    data: dict[str, Any] = {
        "name": message.name,
        "entrypoint": message.entrypoint,
        "objective": {"metric": message.objective.metric, "mode": message.objective.mode},
        "budget": {},
        "search": {
            "searcher": message.search.searcher,
            "scheduler": message.search.scheduler,
            "seed": message.search.seed,
        },
        "fidelity": {
            "min": message.fidelity.min,
            "max": message.fidelity.max,
            "eta": message.fidelity.eta,
        },
        "space": space,
        "resources": {
            "gpus": message.resources.gpus,
            "min_gpu_memory_gb": message.resources.min_gpu_memory_gb,
        },
    }
    if message.HasField("verification"):
        data["verification"] = {
            "fraction": message.verification.fraction,
            "tolerance": message.verification.tolerance,
            "best": message.verification.best,
        }
    for key in ("max_trials", "max_gpu_hours", "deadline", "max_credits"):
        if message.budget.HasField(key):
            data["budget"][key] = getattr(message.budget, key)
    if message.search.HasField("max_running"):
        data["search"]["max_running"] = message.search.max_running
    if message.search.enqueue:
        data["search"]["enqueue"] = [
            {name: value_from_proto(value) for name, value in config.params.items()}
            for config in message.search.enqueue
        ]
    return data


def spec_from_proto(message: common_pb2.StudySpec) -> tuple[StudySpec, str]:
    """Validate a submitted study; returns the spec and its bundle digest."""
    digest = message.bundle_digest
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInputError("bundle_digest", digest, "must be a sha256 hex digest")
    return StudySpec.from_mapping(spec_mapping_from_proto(message)), digest
