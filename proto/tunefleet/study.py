"""The study file: the keys every tool agrees on, and their validation.

:meth:`StudySpec.from_mapping` turns the parsed ``study.toml`` (or the coordinator's view of a
submitted study) into a validated :class:`StudySpec`. Any constraint that fails raises
:class:`~tunefleet.errors.InvalidInputError` naming the key, the value and what is allowed; the
same function runs in the client (before anything is uploaded) and in the coordinator (before
anything is stored), so the two cannot disagree.
"""

from __future__ import annotations

import enum
import keyword
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from tunefleet.errors import InvalidInputError
from tunefleet.space import SearchSpace

__all__ = [
    "check_new",
    "Mode",
    "Objective",
    "Budget",
    "SearchConfig",
    "Fidelity",
    "Resources",
    "Verification",
    "StudySpec",
    "SEARCHERS",
    "SCHEDULERS",
    "load_study_file",
]

SEARCHERS = ("grid", "random", "quasirandom", "tpe", "gp")
SCHEDULERS = ("fifo", "asha", "hyperband", "median")
DEFAULT_SEARCHER = "tpe"
DEFAULT_SCHEDULER = "hyperband"
MAX_TRIALS_LIMIT = 1_000_000
MAX_RUNNING_LIMIT = 100_000
MAX_ENQUEUE = 1_000
MAX_GPU_HOURS = 1e6
MAX_CREDITS = 1e12
MAX_DEADLINE = 253402300799  # Unix seconds: 9999-12-31T23:59:59Z, the last datetime can show
MAX_STEP = 10**9


class Mode(enum.Enum):
    """Whether the objective metric is minimised or maximised."""

    MIN = "min"
    MAX = "max"

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b`` under this mode."""
        return a < b if self is Mode.MIN else a > b


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Mode = Mode.MIN


@dataclass(frozen=True)
class Budget:
    """How much a study may spend. ``max_trials`` is the number of trials created;
    ``max_gpu_hours`` the GPU time its attempts may hold (as the coordinator clocks them, from
    lease to end, times their GPUs); ``max_credits`` the same time at the coordinator's prices;
    ``deadline`` (Unix seconds) when it must end. At a GPU-hour or credit limit or the deadline
    no trial starts and running ones are stopped."""

    max_trials: int | None = None
    max_gpu_hours: float | None = None
    deadline: float | None = None
    max_credits: float | None = None  # the same time at the coordinator's prices

    @property
    def watched(self) -> bool:
        """Whether a limit the coordinator watches while trials run is set (GPU-hours, credits
        or the deadline)."""
        return any(v is not None for v in (self.max_gpu_hours, self.max_credits, self.deadline))

    @property
    def limited(self) -> bool:
        """Whether anything besides a grid's end bounds the study."""
        return any(v is not None for v in (self.max_trials, self.max_gpu_hours, self.deadline,
                                           self.max_credits))


@dataclass(frozen=True)
class SearchConfig:
    """How trials are chosen and stopped. ``max_running`` caps the trials running at once
    (``None``: as many as the pool has free slots)."""

    searcher: str = DEFAULT_SEARCHER
    scheduler: str = DEFAULT_SCHEDULER
    seed: int = 0
    max_running: int | None = None
    # configurations the first trials run, in order, before the searcher suggests any (known
    # good settings, or the best of an earlier study); each gives every parameter a value
    enqueue: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Fidelity:
    """The range of the ``step`` that training code reports; ``max`` is where a trial ends."""

    min: int = 1
    max: int = 1
    eta: int = 3


@dataclass(frozen=True)
class Resources:
    """What one trial needs: ``gpus`` GPUs each with ``min_gpu_memory_gb``, or a CPU slot."""

    gpus: int = 0
    min_gpu_memory_gb: float = 0.0


@dataclass(frozen=True)
class Verification:
    """Redundant re-execution on another node: a ``fraction`` of completed trials, and the best
    trial when ``best``; values that differ by more than ``tolerance`` (relative) are disputed."""

    fraction: float = 0.0
    tolerance: float = 0.05
    best: bool = True


@dataclass(frozen=True)
class StudySpec:
    """A validated study definition. ``bundle`` is a local directory (client side only)."""

    name: str
    objective: Objective
    space: SearchSpace
    budget: Budget = field(default_factory=Budget)
    search: SearchConfig = field(default_factory=SearchConfig)
    fidelity: Fidelity = field(default_factory=Fidelity)
    resources: Resources = field(default_factory=Resources)
    verification: Verification = field(default_factory=Verification)
    entrypoint: str = "train.py"
    bundle: str = "."

    @classmethod
    def from_mapping(cls, data: Any) -> StudySpec:
        """Validate a parsed study file and build the spec; raise on the first problem."""
        if not isinstance(data, Mapping):
            raise InvalidInputError("study", type(data).__name__, "must be a table")
        _check_keys(
            "study",
            data,
            {"name", "bundle", "entrypoint", "objective", "budget", "search", "fidelity",
             "space", "resources", "verification"},
        )
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInputError("name", name, "must be a non-empty string of at most 100 chars")
        bundle = data.get("bundle", ".")
        if not isinstance(bundle, str) or not bundle:
            raise InvalidInputError("bundle", bundle, "must be a directory path")
        entrypoint = data.get("entrypoint", "train.py")
        _check_entrypoint(entrypoint)
        objective = _objective(data.get("objective"))
        budget = _budget(_table(data, "budget"))
        search = _search(_table(data, "search"))
        fidelity = _fidelity(_table(data, "fidelity"))
        resources = _resources(_table(data, "resources"))
        verification = _verification(_table(data, "verification"))
        space = SearchSpace.from_mapping(data.get("space"))
        search = _checked_enqueue(search, space, budget)
        if not budget.limited and search.searcher != "grid":
            raise InvalidInputError(
                "budget.max_trials", None, f"is required with searcher {search.searcher!r} "
                "unless max_gpu_hours, max_credits or deadline bounds the study (only a grid search ends "
                "by itself)"
            )
        if budget.max_gpu_hours is not None and resources.gpus == 0:
            raise InvalidInputError(
                "budget.max_gpu_hours", budget.max_gpu_hours, "needs resources.gpus >= 1 (trials "
                "on CPU slots use no GPU time); bound the study with max_trials or deadline"
            )
        return cls(
            name=name, objective=objective, space=space, budget=budget, search=search,
            fidelity=fidelity, resources=resources, verification=verification,
            entrypoint=entrypoint, bundle=bundle,
        )

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping` (``budget`` keys that are unset are left out)."""
        budget: dict[str, Any] = {} if self.budget.max_trials is None else {
            "max_trials": self.budget.max_trials}
        if self.budget.max_gpu_hours is not None:
            budget["max_gpu_hours"] = self.budget.max_gpu_hours
        if self.budget.deadline is not None:
            budget["deadline"] = self.budget.deadline
        if self.budget.max_credits is not None:
            budget["max_credits"] = self.budget.max_credits
        return {
            "name": self.name,
            "bundle": self.bundle,
            "entrypoint": self.entrypoint,
            "objective": {"metric": self.objective.metric, "mode": self.objective.mode.value},
            "budget": budget,
            "search": {
                "searcher": self.search.searcher,
                "scheduler": self.search.scheduler,
                "seed": self.search.seed,
                **({} if self.search.max_running is None
                   else {"max_running": self.search.max_running}),
                **({"enqueue": [dict(c) for c in self.search.enqueue]}
                   if self.search.enqueue else {}),
            },
            "fidelity": {"min": self.fidelity.min, "max": self.fidelity.max, "eta": self.fidelity.eta},
            "space": self.space.to_mapping(),
            "resources": {
                "gpus": self.resources.gpus,
                "min_gpu_memory_gb": self.resources.min_gpu_memory_gb,
            },
            "verification": {
                "fraction": self.verification.fraction,
                "tolerance": self.verification.tolerance,
                "best": self.verification.best,
            },
        }


MAX_GPU_MEMORY_GB = 4096.0


def check_new(spec: StudySpec) -> None:
    """Raise :class:`InvalidInputError` if a *new* study breaks a rule added after studies were
    stored without it (a stored study is re-read with :meth:`StudySpec.from_mapping` alone, so
    it still rebuilds): a name with control characters (they would reach terminals), an
    objective metric that ``trial.report(step, NAME=value)`` cannot take, GPU memory asked of a
    study without GPUs, or more of it than any GPU has, or a scheduler that stops trials early
    with no steps to stop them between (``fidelity.max == fidelity.min``: no ``[fidelity]``)."""
    if not spec.name.isprintable():
        raise InvalidInputError("name", spec.name, "must be printable text, without control "
                                "characters such as line breaks or escapes")
    metric = spec.objective.metric
    if metric in ("step", "self") or keyword.iskeyword(metric):
        raise InvalidInputError(
            "objective.metric", metric,
            "must be a name trial.report(step, NAME=value) takes: not 'step' or 'self' "
            "(report's own arguments) nor a Python keyword")
    for name, param in spec.space.items():
        for choice in getattr(param, "choices", ()):
            if isinstance(choice, str) and not choice.isprintable():
                raise InvalidInputError(f"space.{name}.choices", choice, "must be printable "
                                        "text, without line breaks or escapes (choices are "
                                        "shown in tables and terminals)")
    fidelity, scheduler = spec.fidelity, spec.search.scheduler
    if scheduler != "fifo" and fidelity.max == fidelity.min:
        raise InvalidInputError(
            "fidelity.max", fidelity.max,
            f"must be more than fidelity.min ({fidelity.min}) for scheduler {scheduler!r}, "
            "which stops trials between the two: set [fidelity] max to the steps (epochs) a "
            "trial trains, or scheduler = \"fifo\" for trials that report one step")
    mem = spec.resources.min_gpu_memory_gb
    if mem > 0 and spec.resources.gpus == 0:
        raise InvalidInputError("resources.min_gpu_memory_gb", mem,
                                "needs resources.gpus >= 1: a trial without GPUs has no GPU memory")
    if mem > MAX_GPU_MEMORY_GB:
        raise InvalidInputError("resources.min_gpu_memory_gb", mem,
                                f"must be at most {MAX_GPU_MEMORY_GB:g} (no GPU has more)")


def load_study_file(path: str | Path) -> StudySpec:
    """Read and validate a ``study.toml``; raise :class:`InvalidInputError` on a bad file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidInputError("study file", str(p), f"must be a readable file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError("study file", str(p), f"must be valid TOML ({exc})") from None
    spec = StudySpec.from_mapping(data)
    check_new(spec)
    return spec


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            name = key if where == "study" else f"{where}.{key}"
            raise InvalidInputError(name, table[key], f"is not a known key; allowed: {sorted(allowed)}")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InvalidInputError(key, value, "must be a table")
    return value


def _int(where: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(where, value, "must be an integer")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(where, value, f"must be {bound}")
    return value


def _check_entrypoint(entrypoint: Any) -> None:
    if not isinstance(entrypoint, str) or not entrypoint.endswith(".py"):
        raise InvalidInputError("entrypoint", entrypoint, "must be a relative path to a .py file")
    path = PurePosixPath(entrypoint)
    if path.is_absolute() or ".." in path.parts or "\\" in entrypoint:
        raise InvalidInputError("entrypoint", entrypoint, "must stay inside the bundle directory")


def _objective(table: Any) -> Objective:
    if not isinstance(table, Mapping):
        raise InvalidInputError("objective", table, "is required: a table with metric and mode")
    _check_keys("objective", table, {"metric", "mode"})
    metric = table.get("metric")
    if not isinstance(metric, str) or not metric.isidentifier():
        raise InvalidInputError(
            "objective.metric", metric,
            "must be the name of a metric that trial.report gets, a Python identifier such as "
            "val_loss" if metric is not None else
            "is required: the name of a metric that trial.report gets, such as val_loss",
        )
    mode = table.get("mode", "min")
    if mode not in ("min", "max"):
        raise InvalidInputError("objective.mode", mode, "must be 'min' or 'max'")
    return Objective(metric, Mode(mode))


def _budget(table: Mapping[str, Any]) -> Budget:
    _check_keys("budget", table, {"max_trials", "max_gpu_hours", "deadline", "max_credits"})
    max_trials = max_gpu_hours = deadline = max_credits = None
    if "max_trials" in table:
        max_trials = _int("budget.max_trials", table["max_trials"], 1, MAX_TRIALS_LIMIT)
    if "max_gpu_hours" in table:
        max_gpu_hours = _amount("budget.max_gpu_hours", table["max_gpu_hours"], "hours",
                                MAX_GPU_HOURS)
    if "deadline" in table:
        deadline = _deadline(table["deadline"])
    if "max_credits" in table:
        max_credits = _amount("budget.max_credits", table["max_credits"], "credits",
                              MAX_CREDITS)
    return Budget(max_trials, max_gpu_hours, deadline, max_credits)


def _amount(where: str, value: Any, unit: str, high: float) -> float:
    """A number in ``(0, high]`` (NaN and booleans refused), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise InvalidInputError(where, value, f"must be a number of {unit} in (0, {high:g}]")
    return float(value)


def _deadline(value: Any) -> float:
    """Unix seconds from a TOML offset date-time, an ISO 8601 string with a time zone, or a
    number of Unix seconds (as the wire carries it)."""
    allowed = ("must be a date-time with a time zone, e.g. 2026-12-01T18:00:00Z or "
               "2026-12-01T19:00:00+01:00")
    when: datetime | None = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError("budget.deadline", value, allowed) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and 0 < value <= MAX_DEADLINE):
            raise InvalidInputError("budget.deadline", value, "must be Unix seconds between "
                                    f"1970 and 9999 (UTC), or {allowed.removeprefix('must be ')}")
        return float(value)
    if when is None or when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInputError("budget.deadline", value, allowed)
    if not 0 < when.timestamp() <= MAX_DEADLINE:
        raise InvalidInputError("budget.deadline", value, "must lie between 1970 and 9999 (UTC)")
    return when.timestamp()


def deadline_text(deadline: float) -> str:
    """A deadline as ISO 8601 in UTC, as :func:`_deadline` reads it back."""
    return datetime.fromtimestamp(deadline, UTC).isoformat().replace("+00:00", "Z")


def _search(table: Mapping[str, Any]) -> SearchConfig:
    _check_keys("search", table, {"searcher", "scheduler", "seed", "max_running", "enqueue"})
    searcher = table.get("searcher", DEFAULT_SEARCHER)
    if searcher not in SEARCHERS:
        raise InvalidInputError("search.searcher", searcher, f"must be one of {list(SEARCHERS)}")
    scheduler = table.get("scheduler", DEFAULT_SCHEDULER)
    if scheduler not in SCHEDULERS:
        raise InvalidInputError("search.scheduler", scheduler, f"must be one of {list(SCHEDULERS)}")
    seed = _int("search.seed", table.get("seed", 0), 0, 2**63 - 1)
    max_running = None
    if "max_running" in table:
        max_running = _int("search.max_running", table["max_running"], 1, MAX_RUNNING_LIMIT)
    enqueue = table.get("enqueue", [])
    if not isinstance(enqueue, list) or len(enqueue) > MAX_ENQUEUE:
        given = f"{len(enqueue):,} configurations" if isinstance(enqueue, list) else enqueue
        raise InvalidInputError("search.enqueue", given,
                                f"must be a list of at most {MAX_ENQUEUE} tables, e.g. "
                                "enqueue = [{ lr = 0.01, hidden = 64 }]")
    for i, config in enumerate(enqueue):
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"search.enqueue[{i}]", config,
                                    "must be a table giving every parameter a value")
    return SearchConfig(searcher, scheduler, seed, max_running,
                        tuple(dict(c) for c in enqueue))


def _checked_enqueue(search: SearchConfig, space: SearchSpace, budget: Budget) -> SearchConfig:
    """``search`` with its enqueued configurations checked against the space and the budget,
    each value in its parameter's own type (a float parameter given ``0`` holds ``0.0``)."""
    if not search.enqueue:
        return search
    if search.searcher == "grid":
        raise InvalidInputError("search.enqueue", f"{len(search.enqueue)} configurations",
                                "cannot be used with the grid searcher, which covers the "
                                "space exactly once by itself")
    if budget.max_trials is not None and len(search.enqueue) > budget.max_trials:
        raise InvalidInputError("search.enqueue", f"{len(search.enqueue)} configurations",
                                f"must be at most budget.max_trials ({budget.max_trials})")
    typed = []
    for i, config in enumerate(search.enqueue):
        space.validate_config(config, field=f"search.enqueue[{i}]")
        typed.append({name: space[name].normalize(value) for name, value in config.items()})
    return replace(search, enqueue=tuple(typed))


def _fidelity(table: Mapping[str, Any]) -> Fidelity:
    _check_keys("fidelity", table, {"min", "max", "eta"})
    low = _int("fidelity.min", table.get("min", 1), 1, MAX_STEP)
    high = _int("fidelity.max", table.get("max", max(low, 1)), 1, MAX_STEP)
    if low > high:
        raise InvalidInputError(
            "fidelity", {"min": low, "max": high}, f"`min <= max` must hold, but got (min={low}, max={high})"
        )
    eta = _int("fidelity.eta", table.get("eta", 3), 2, 1000)
    return Fidelity(low, high, eta)


def _fraction(where: str, value: Any, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and 0 <= value <= high
    ):
        raise InvalidInputError(where, value, f"must be a number in [0, {high:g}]")
    return float(value)


def _verification(table: Mapping[str, Any]) -> Verification:
    _check_keys("verification", table, {"fraction", "tolerance", "best"})
    best = table.get("best", True)
    if not isinstance(best, bool):
        raise InvalidInputError("verification.best", best, "must be true or false")
    return Verification(
        fraction=_fraction("verification.fraction", table.get("fraction", 0.0), 1.0),
        tolerance=_fraction("verification.tolerance", table.get("tolerance", 0.05), 1e6),
        best=best,
    )


def _resources(table: Mapping[str, Any]) -> Resources:
    _check_keys("resources", table, {"gpus", "min_gpu_memory_gb"})
    gpus = _int("resources.gpus", table.get("gpus", 0), 0, 64)
    mem = table.get("min_gpu_memory_gb", 0.0)
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not math.isfinite(mem) or mem < 0:
        raise InvalidInputError("resources.min_gpu_memory_gb", mem, "must be a number >= 0")
    return Resources(gpus, float(mem))
