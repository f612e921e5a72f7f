"""Search spaces: the parameters a study tunes and the values each may take.

A :class:`SearchSpace` is an ordered mapping from parameter name to a parameter definition:
:class:`FloatParam`, :class:`IntParam` or :class:`CategoricalParam`. Every definition maps
between its values and the unit interval (``to_unit`` / ``from_unit``), which is all that
samplers need: a sampler works on ``[0, 1]^d`` and the space turns points into configurations.

Spaces are built from plain mappings (the ``[space]`` table of a study file) by
:meth:`SearchSpace.from_mapping`, which raises :class:`~tunefleet.errors.InvalidInputError`
naming the parameter, the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunefleet.errors import InvalidInputError

__all__ = [
    "FloatParam",
    "IntParam",
    "CategoricalParam",
    "Param",
    "ParamValue",
    "SearchSpace",
    "PARAM_TYPES",
]

ParamValue = float | int | str | bool
PARAM_TYPES = ("float", "int", "categorical")
MAX_CHOICES = 10_000


def _is_number(value: Any) -> bool:
    """A real number, numpy's scalars included; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _checked_choices(where: str, choices: Any) -> tuple[ParamValue, ...]:
    """``choices`` as a tuple, refused (naming ``where.choices``) unless a non-empty list or
    tuple of at most :data:`MAX_CHOICES` distinct strings, finite numbers or booleans."""
    if not isinstance(choices, (list, tuple)) or len(choices) == 0:
        raise InvalidInputError(f"{where}.choices", choices, "must be a non-empty list")
    for choice in choices:
        if not isinstance(choice, (str, int, float, bool)):
            raise InvalidInputError(
                f"{where}.choices", choice, "each choice must be a string, number or boolean"
            )
    if len(choices) > MAX_CHOICES:
        raise InvalidInputError(f"{where}.choices", f"{len(choices)} choices",
                                f"at most {MAX_CHOICES} choices")
    seen: set[tuple[str, ParamValue]] = set()
    for choice in choices:
        if isinstance(choice, float) and not math.isfinite(choice):
            raise InvalidInputError(f"{where}.choices", choice, "choices must be finite")
        key = (type(choice).__name__, choice)  # 1, 1.0 and True are distinct choices
        if key in seen:
            raise InvalidInputError(f"{where}.choices", choice, "choices must be distinct")
        seen.add(key)
    return tuple(choices)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # a Fraction beyond a double, say
        return False


def _check_bounds(where: str, kind: str, low: Any, high: Any, log: Any) -> None:
    """Refuse (naming ``where.low``, ``where.high``, ``where.log`` or ``where``) bounds that
    are not finite numbers with ``low < high`` (integers of 64 bits for ``kind == "int"``),
    ``low > 0`` with ``log``, and, for a float range, a finite ``high - low``."""
    if not isinstance(log, bool):
        raise InvalidInputError(f"{where}.log", log, "must be true or false")
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, int) and not isinstance(value, bool) and not (
            -(2**63) <= value < 2**63
        ):
            raise InvalidInputError(f"{where}.{key}", value, "must fit in a signed 64-bit integer")
        if not _is_number(value) or not _finite(value):
            raise InvalidInputError(f"{where}.{key}", value, "must be a finite number")
        if kind == "int" and not float(value).is_integer():
            raise InvalidInputError(f"{where}.{key}", value, "must be an integer")
        if kind == "int" and not -(2**63) <= int(value) < 2**63:  # 1e19 is a float
            raise InvalidInputError(f"{where}.{key}", value, "must fit in a signed 64-bit integer")
    if not low < high:
        raise InvalidInputError(
            where, {"low": low, "high": high}, f"`low < high` must hold, but got ({low=}, {high=})"
        )
    if log and low <= 0:
        raise InvalidInputError(f"{where}.low", low, "must be > 0 when log = true")
    if kind == "float" and not math.isfinite(float(high) - float(low)):
        raise InvalidInputError(where, {"low": low, "high": high},
                                "`high - low` must be a finite number (at most about 1.8e308); "
                                "use log = true for ranges that span many orders of magnitude")


@dataclass(frozen=True)
class FloatParam:
    """A real number in ``[low, high]``, sampled uniformly or, with ``log``, log-uniformly.

    Construction checks what :meth:`SearchSpace.from_mapping` checks, with its messages:
    finite numbers with ``low < high`` and a finite ``high - low``, ``low > 0`` with ``log``,
    ``log`` a bool; anything else raises :class:`~tunefleet.errors.InvalidInputError` naming
    ``FloatParam.low``, ``FloatParam.high``, ``FloatParam.log`` or ``FloatParam``. The bounds
    are kept as floats.
    """

    low: float
    high: float
    log: bool = False

    type_name = "float"

    def __post_init__(self) -> None:
        _check_bounds("FloatParam", "float", self.low, self.high, self.log)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    def from_unit(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        if u in (0.0, 1.0):  # the bounds exactly (exp(log(low)) need not be low)
            return self.high if u else self.low
        if self.log:
            value = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + u * (self.high - self.low)
        return float(min(max(value, self.low), self.high))

    def to_unit(self, value: ParamValue) -> float:
        v = float(value)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def contains(self, value: Any) -> bool:
        # compared as given: Python orders ints and floats exactly, and an int too big for a
        # float must be refused, not overflow
        return _is_number(value) and self.low <= value <= self.high

    def normalize(self, value: Any) -> float:
        """A value :meth:`contains` accepts, as this parameter's own type."""
        return float(value)

    def grid(self, points: int) -> list[ParamValue]:
        """``points`` evenly spread values (log-spread with ``log``), each once: a range too
        narrow for that many distinct floats gives fewer."""
        if points <= 1:
            return [self.from_unit(0.5)]
        return list(dict.fromkeys(self.from_unit(i / (points - 1)) for i in range(points)))


@dataclass(frozen=True)
class IntParam:
    """An integer in ``[low, high]`` (both included), uniform or, with ``log``, log-uniform.

    Construction checks what :meth:`SearchSpace.from_mapping` checks, with its messages:
    integers of 64 bits (integral floats included) with ``low < high``, ``low > 0`` with
    ``log``, ``log`` a bool; anything else raises :class:`~tunefleet.errors.InvalidInputError`
    naming ``IntParam.low``, ``IntParam.high``, ``IntParam.log`` or ``IntParam``. The bounds are
    kept as ints.
    """

    low: int
    high: int
    log: bool = False

    type_name = "int"

    def __post_init__(self) -> None:
        _check_bounds("IntParam", "int", self.low, self.high, self.log)
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    def from_unit(self, u: float) -> int:
        u = min(max(u, 0.0), 1.0)
        # Widen the range by half a step on each side so every integer gets an equal share.
        lo, hi = self.low - 0.5, self.high + 0.5
        if self.log:
            lo, hi = max(self.low - 0.5, 0.5), self.high + 0.5
            value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            value = lo + u * (hi - lo)
        return int(min(max(round(value), self.low), self.high))

    def to_unit(self, value: ParamValue) -> float:
        v = float(value)
        lo, hi = self.low - 0.5, self.high + 0.5
        if self.log:
            lo = max(self.low - 0.5, 0.5)
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (v - lo) / (hi - lo)

    def contains(self, value: Any) -> bool:
        return (
            _is_number(value) and (isinstance(value, int) or float(value).is_integer())
            and self.low <= value <= self.high
        )

    def normalize(self, value: Any) -> int:
        """A value :meth:`contains` accepts, as this parameter's own type."""
        return int(value)

    def grid(self, points: int) -> list[ParamValue]:
        if self.high - self.low + 1 <= points:
            return list(range(self.low, self.high + 1))
        values = sorted({self.from_unit((i + 0.5) / points) for i in range(points)})
        return list(values)


@dataclass(frozen=True)
class CategoricalParam:
    """One of a fixed, non-empty tuple of distinct choices (strings, numbers or booleans).

    Construction checks what :meth:`SearchSpace.from_mapping` checks, with its messages: a
    non-empty list or tuple of at most :data:`MAX_CHOICES` distinct strings, finite numbers or
    booleans (``1``, ``1.0`` and ``True`` are distinct); anything else raises
    :class:`~tunefleet.errors.InvalidInputError` naming ``CategoricalParam.choices``. The
    choices are kept as a tuple.
    """

    choices: tuple[ParamValue, ...]

    type_name = "categorical"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", _checked_choices("CategoricalParam", self.choices))

    def from_unit(self, u: float) -> ParamValue:
        index = min(int(min(max(u, 0.0), 1.0) * len(self.choices)), len(self.choices) - 1)
        return self.choices[index]

    def to_unit(self, value: ParamValue) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def index(self, value: ParamValue) -> int:
        for i, choice in enumerate(self.choices):
            if type(choice) is type(value) and choice == value:
                return i
        raise InvalidInputError("value", value, f"must be one of {list(self.choices)}")

    def contains(self, value: Any) -> bool:
        return any(type(c) is type(value) and c == value for c in self.choices)

    def normalize(self, value: Any) -> ParamValue:
        """A value :meth:`contains` accepts, as this parameter's own type."""
        return value  # type: ignore[no-any-return]

    def grid(self, points: int) -> list[ParamValue]:
        return list(self.choices)


Param = FloatParam | IntParam | CategoricalParam


def _param_from_mapping(name: str, spec: Any) -> Param:
    where = f"space.{name}"
    if not isinstance(spec, Mapping):
        raise InvalidInputError(where, spec, "must be a table such as {type = \"float\", ...}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise InvalidInputError(f"{where}.type", kind, f"must be one of {list(PARAM_TYPES)}")
    allowed_keys = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log"}
    for key in spec:
        if key not in allowed_keys:
            raise InvalidInputError(
                f"{where}.{key}", spec[key], f"is not a key of a {kind} parameter; "
                f"allowed keys are {sorted(allowed_keys)}"
            )
    if kind == "categorical":
        return CategoricalParam(_checked_choices(where, spec.get("choices")))
    for key in ("low", "high"):
        if key not in spec:
            raise InvalidInputError(f"{where}.{key}", None, f"is required for a {kind} parameter")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    _check_bounds(where, kind, low, high, log)
    if kind == "int":
        return IntParam(int(low), int(high), log)
    return FloatParam(float(low), float(high), log)


class SearchSpace(Mapping[str, Param]):
    """An ordered, immutable mapping from parameter names to parameter definitions.

    Contract: ``params`` must be a non-empty mapping from identifiers to :class:`FloatParam`,
    :class:`IntParam` or :class:`CategoricalParam` (each checked when it was built); anything
    else raises :class:`~tunefleet.errors.InvalidInputError` naming ``space`` or
    ``space.<name>``, with the messages of :meth:`from_mapping`.
    """

    def __init__(self, params: Mapping[str, Param]) -> None:
        if not isinstance(params, Mapping) or len(params) == 0:
            raise InvalidInputError("space", params, "must be a non-empty table of parameters")
        for name, p in params.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise InvalidInputError("space", name, "parameter names must be identifiers")
            if not isinstance(p, (FloatParam, IntParam, CategoricalParam)):
                raise InvalidInputError(
                    f"space.{name}", p, "must be a FloatParam, IntParam or CategoricalParam "
                    "(or build the space with SearchSpace.from_mapping)"
                )
        self._params: dict[str, Param] = dict(params)

    @classmethod
    def from_mapping(cls, mapping: Any) -> SearchSpace:
        """Build a space from a study file's ``[space]`` table; raise on any invalid entry."""
        if not isinstance(mapping, Mapping) or len(mapping) == 0:
            raise InvalidInputError("space", mapping, "must be a non-empty table of parameters")
        params: dict[str, Param] = {}
        for name, spec in mapping.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise InvalidInputError("space", name, "parameter names must be identifiers")
            params[name] = _param_from_mapping(name, spec)
        return cls(params)

    def to_mapping(self) -> dict[str, dict[str, Any]]:
        """The inverse of :meth:`from_mapping`."""
        out: dict[str, dict[str, Any]] = {}
        for name, p in self._params.items():
            if isinstance(p, CategoricalParam):
                out[name] = {"type": "categorical", "choices": list(p.choices)}
            else:
                out[name] = {"type": p.type_name, "low": p.low, "high": p.high, "log": p.log}
        return out

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        # Order matters: it fixes the coordinates of the unit cube.
        return isinstance(other, SearchSpace) and list(self._params.items()) == list(
            other._params.items()
        )

    def __hash__(self) -> int:
        return hash(tuple(self._params.items()))

    def __repr__(self) -> str:
        return f"SearchSpace({self._params!r})"

    def from_unit(self, point: Any) -> dict[str, ParamValue]:
        """Turn a point of ``[0, 1]^d`` (in parameter order) into a configuration."""
        return {name: p.from_unit(float(u)) for (name, p), u in zip(self._params.items(), point, strict=True)}

    def to_unit(self, config: Mapping[str, ParamValue]) -> np.ndarray:
        """Turn a configuration into a point of ``[0, 1]^d`` (in parameter order)."""
        return np.array([p.to_unit(config[name]) for name, p in self._params.items()])

    def sample(self, rng: np.random.Generator) -> dict[str, ParamValue]:
        """Draw one configuration uniformly (log-uniformly for log parameters)."""
        return self.from_unit(rng.random(len(self._params)))

    def validate_config(self, config: Mapping[str, Any], field: str = "params") -> None:
        """Raise :class:`InvalidInputError` unless ``config`` gives every parameter a valid value."""
        if not isinstance(config, Mapping):
            raise InvalidInputError(field, config,
                                    "must be a table of parameter values, such as {x = 0.5}")
        for name in config:
            if name not in self._params:
                raise InvalidInputError(
                    f"{field}.{name}", config[name], f"is not a parameter; known: {list(self)}"
                )
        for name, p in self._params.items():
            if name not in config:
                raise InvalidInputError(f"{field}.{name}", None, "is missing")
            if not p.contains(config[name]):
                raise InvalidInputError(f"{field}.{name}", config[name], _describe(p))


def _describe(p: Param) -> str:
    if isinstance(p, CategoricalParam):
        return f"must be one of {list(p.choices)}"
    return f"must be {'an integer' if isinstance(p, IntParam) else 'a number'} in [{p.low}, {p.high}]"
