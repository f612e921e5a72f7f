"""The study file: validation of every key, loading from disk, and the mapping round trip."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunefleet.errors import InvalidInputError
from tunefleet.space import SearchSpace
from tunefleet.study import (
    MAX_TRIALS_LIMIT,
    SCHEDULERS,
    SEARCHERS,
    Budget,
    Fidelity,
    Mode,
    Resources,
    SearchConfig,
    StudySpec,
    load_study_file,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "client" / "templates" / "digits" / "study.toml"

VALID: dict[str, Any] = {
    "name": "digits-mlp",
    "bundle": ".",
    "entrypoint": "train.py",
    "objective": {"metric": "val_loss", "mode": "min"},
    "budget": {"max_trials": 60},
    "search": {"searcher": "tpe", "scheduler": "hyperband", "seed": 0},
    "fidelity": {"min": 1, "max": 27, "eta": 3},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
        "activation": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
    },
    "resources": {"gpus": 1, "min_gpu_memory_gb": 4},
}


GOOD = {"lr": 0.01, "hidden": 64, "activation": "relu"}  # a configuration of VALID's space


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def with_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the dotted ``path`` to ``value``."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        table = data
        for key in parents:
            table = table[key]
        table[last] = value

    return change


def without(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        table = data
        for key in parents:
            table = table[key]
        del table[last]

    return change


@pytest.mark.parametrize(
    ("change", "field", "value", "fragments"),
    [
        pytest.param(with_("search.searcher", "bayes"), "search.searcher", "bayes", SEARCHERS,
                     id="unknown-searcher"),
        pytest.param(with_("search.scheduler", "pbt"), "search.scheduler", "pbt", SCHEDULERS,
                     id="unknown-scheduler"),
        pytest.param(with_("search.seed", -1), "search.seed", -1, ("[0, ",), id="seed-negative"),
        pytest.param(with_("search.seed", "0"), "search.seed", "0", ("integer",),
                     id="seed-string"),
        pytest.param(with_("search.max_running", 0), "search.max_running", 0, ("in [1, ",),
                     id="max-running-zero"),
        pytest.param(with_("search.max_running", -3), "search.max_running", -3, ("in [1, ",),
                     id="max-running-negative"),
        pytest.param(with_("search.max_running", 2.5), "search.max_running", 2.5, ("integer",),
                     id="max-running-float"),
        pytest.param(with_("search.max_running", True), "search.max_running", True,
                     ("integer",), id="max-running-bool"),
        pytest.param(with_("search.max_running", "8"), "search.max_running", "8", ("integer",),
                     id="max-running-string"),
        pytest.param(with_("fidelity", {"min": 5, "max": 3}), "fidelity", {"min": 5, "max": 3},
                     ("min <= max", "min=5, max=3"), id="fidelity-min-above-max"),
        pytest.param(with_("fidelity.min", 0), "fidelity.min", 0, ("in [1, ",),
                     id="fidelity-min-zero"),
        pytest.param(with_("fidelity.max", 2.5), "fidelity.max", 2.5, ("integer",),
                     id="fidelity-max-float"),
        pytest.param(with_("fidelity.eta", 1), "fidelity.eta", 1, ("in [2, ",), id="eta-1"),
        pytest.param(with_("fidelity.eta", 0), "fidelity.eta", 0, ("in [2, ",), id="eta-0"),
        pytest.param(without("objective"), "objective", None, ("metric", "mode"),
                     id="missing-objective"),
        pytest.param(with_("objective", "val_loss"), "objective", "val_loss", ("table",),
                     id="objective-not-table"),
        pytest.param(without("objective.metric"), "objective.metric", None,
                     ("is required: the name of a metric that trial.report gets",),
                     id="missing-metric"),
        pytest.param(with_("objective.metric", "val loss"), "objective.metric", "val loss",
                     ("must be the name of a metric that trial.report gets, a Python identifier",),
                     id="metric-not-identifier"),
        pytest.param(with_("objective.metric", "val/acc"), "objective.metric", "val/acc",
                     ("a Python identifier such as val_loss",), id="metric-with-slash"),
        pytest.param(with_("objective.mode", "minimize"), "objective.mode", "minimize",
                     ("'min'", "'max'"), id="bad-mode"),
        pytest.param(with_("budget.max_trials", 0), "budget.max_trials", 0,
                     (f"[1, {MAX_TRIALS_LIMIT}]",), id="max-trials-zero"),
        pytest.param(with_("budget.max_trials", -5), "budget.max_trials", -5, ("[1,",),
                     id="max-trials-negative"),
        pytest.param(with_("budget.max_trials", MAX_TRIALS_LIMIT + 1), "budget.max_trials",
                     MAX_TRIALS_LIMIT + 1, (str(MAX_TRIALS_LIMIT),), id="max-trials-over-limit"),
        pytest.param(with_("budget.max_trials", True), "budget.max_trials", True,
                     ("integer",), id="max-trials-bool"),
        pytest.param(with_("budget.max_trials", "10"), "budget.max_trials", "10",
                     ("integer",), id="max-trials-string"),
        pytest.param(with_("entrypoint", "../x.py"), "entrypoint", "../x.py", ("inside",),
                     id="entrypoint-parent"),
        pytest.param(with_("entrypoint", "src/../../x.py"), "entrypoint", "src/../../x.py",
                     ("inside",), id="entrypoint-nested-parent"),
        pytest.param(with_("entrypoint", "/abs.py"), "entrypoint", "/abs.py", ("inside",),
                     id="entrypoint-absolute"),
        pytest.param(with_("entrypoint", "src\\x.py"), "entrypoint", "src\\x.py", ("inside",),
                     id="entrypoint-backslash"),
        pytest.param(with_("entrypoint", "x.sh"), "entrypoint", "x.sh", (".py",),
                     id="entrypoint-not-python"),
        pytest.param(with_("entrypoint", 7), "entrypoint", 7, (".py",),
                     id="entrypoint-not-str"),
        pytest.param(with_("nmae", "x"), "nmae", "x", ("name", "space", "objective"),
                     id="unknown-top-level-key"),
        pytest.param(with_("objective.goal", "min"), "objective.goal", "min",
                     ("metric", "mode"), id="unknown-objective-key"),
        pytest.param(with_("budget.max_cost", 3), "budget.max_cost", 3,
                     ("max_trials", "max_gpu_hours", "deadline", "max_credits"),
                     id="unknown-budget-key"),
        pytest.param(with_("budget.max_credits", 0), "budget.max_credits", 0,
                     ("in (0, 1e+12]",), id="credits-zero"),
        pytest.param(with_("budget.max_credits", "5"), "budget.max_credits", "5",
                     ("number of credits",), id="credits-string"),
        pytest.param(with_("budget.max_gpu_hours", 0), "budget.max_gpu_hours", 0,
                     ("in (0, 1e+06]",), id="gpu-hours-zero"),
        pytest.param(with_("budget.max_gpu_hours", -2.5), "budget.max_gpu_hours", -2.5,
                     ("hours",), id="gpu-hours-negative"),
        pytest.param(with_("budget.max_gpu_hours", True), "budget.max_gpu_hours", True,
                     ("number",), id="gpu-hours-bool"),
        pytest.param(with_("budget.deadline", "tomorrow"), "budget.deadline", "tomorrow",
                     ("time zone", "2026-12-01T18:00:00Z"), id="deadline-not-a-date"),
        pytest.param(with_("budget.deadline", "2026-12-01T18:00:00"), "budget.deadline",
                     "2026-12-01T18:00:00", ("time zone",), id="deadline-without-zone"),
        pytest.param(with_("budget.deadline", datetime(2026, 12, 1, 18)), "budget.deadline",
                     datetime(2026, 12, 1, 18), ("time zone",), id="deadline-naive-toml"),
        pytest.param(with_("budget.deadline", -5), "budget.deadline", -5,
                     ("between 1970 and 9999", "time zone"), id="deadline-negative"),
        pytest.param(with_("budget.deadline", 1e12), "budget.deadline", 1e12,
                     ("between 1970 and 9999",), id="deadline-past-9999"),
        pytest.param(with_("budget.deadline", "9999-12-31T23:59:59-01:00"), "budget.deadline",
                     "9999-12-31T23:59:59-01:00", ("between 1970 and 9999",),
                     id="deadline-past-9999-utc"),
        pytest.param(with_("budget.deadline", "1969-07-20T20:17:00Z"), "budget.deadline",
                     "1969-07-20T20:17:00Z", ("between 1970 and 9999",), id="deadline-before-1970"),
        pytest.param(with_("budget.deadline", [2026]), "budget.deadline", [2026],
                     ("time zone",), id="deadline-list"),
        pytest.param(with_("search.sampler", "tpe"), "search.sampler", "tpe",
                     ("searcher", "scheduler", "seed"), id="unknown-search-key"),
        pytest.param(with_("fidelity.step", 1), "fidelity.step", 1, ("min", "max", "eta"),
                     id="unknown-fidelity-key"),
        pytest.param(with_("resources.cpus", 4), "resources.cpus", 4,
                     ("gpus", "min_gpu_memory_gb"), id="unknown-resources-key"),
        pytest.param(with_("space.lr.step", 0.1), "space.lr.step", 0.1, ("low", "high"),
                     id="unknown-space-key"),
        pytest.param(with_("resources.gpus", -1), "resources.gpus", -1, ("[0, 64]",),
                     id="gpus-negative"),
        pytest.param(with_("resources.gpus", 65), "resources.gpus", 65, ("[0, 64]",),
                     id="gpus-too-many"),
        pytest.param(with_("resources.gpus", 1.0), "resources.gpus", 1.0, ("integer",),
                     id="gpus-float"),
        pytest.param(with_("resources.min_gpu_memory_gb", -1), "resources.min_gpu_memory_gb",
                     -1, (">= 0",), id="gpu-memory-negative"),
        pytest.param(with_("resources.min_gpu_memory_gb", -0.5), "resources.min_gpu_memory_gb",
                     -0.5, (">= 0",), id="gpu-memory-negative-float"),
        pytest.param(with_("resources.min_gpu_memory_gb", math.inf),
                     "resources.min_gpu_memory_gb", math.inf, ("number",), id="gpu-memory-inf"),
        pytest.param(with_("resources.min_gpu_memory_gb", "4"), "resources.min_gpu_memory_gb",
                     "4", ("number",), id="gpu-memory-string"),
        pytest.param(with_("resources.min_gpu_memory_gb", True), "resources.min_gpu_memory_gb",
                     True, ("number",), id="gpu-memory-bool"),
        pytest.param(with_("search.enqueue", {"lr": 0.01}), "search.enqueue", {"lr": 0.01},
                     ("list of at most 1000 tables",), id="enqueue-not-a-list"),
        pytest.param(with_("search.enqueue", [GOOD] * 61), "search.enqueue",
                     "61 configurations", ("at most budget.max_trials (60)",),
                     id="enqueue-over-the-budget"),
        pytest.param(with_("search.enqueue", [GOOD, 3]), "search.enqueue[1]", 3,
                     ("table giving every parameter",), id="enqueue-not-a-table"),
        pytest.param(with_("search.enqueue", [{"lr": 0.01, "hidden": 64}]),
                     "search.enqueue[0].activation", None, ("missing",), id="enqueue-missing"),
        pytest.param(with_("search.enqueue", [{**GOOD, "depth": 2}]),
                     "search.enqueue[0].depth", 2, ("not a parameter",), id="enqueue-unknown"),
        pytest.param(with_("search.enqueue", [GOOD, {**GOOD, "lr": 0.5}]),
                     "search.enqueue[1].lr", 0.5, ("in [0.0001, 0.1]",), id="enqueue-range"),
        pytest.param(with_("search.enqueue", [{**GOOD, "hidden": 64.5}]),
                     "search.enqueue[0].hidden", 64.5, ("integer",), id="enqueue-int"),
        pytest.param(with_("search.enqueue", [{**GOOD, "activation": "elu"}]),
                     "search.enqueue[0].activation", "elu", ("one of",), id="enqueue-choice"),
        pytest.param(with_("name", ""), "name", "", ("non-empty",), id="name-empty"),
        pytest.param(with_("name", "   "), "name", "   ", ("non-empty",), id="name-blank"),
        pytest.param(without("name"), "name", None, ("non-empty",), id="name-missing"),
        pytest.param(with_("name", "x" * 101), "name", "x" * 101, ("100",), id="name-too-long"),
        pytest.param(with_("name", 42), "name", 42, ("string",), id="name-not-str"),
        pytest.param(with_("bundle", ""), "bundle", "", ("directory",), id="bundle-empty"),
        pytest.param(with_("budget", 5), "budget", 5, ("table",), id="section-not-table"),
        pytest.param(without("space"), "space", None, ("non-empty",), id="missing-space"),
        pytest.param(with_("space", {}), "space", {}, ("non-empty",), id="empty-space"),
    ],
)
def test_bad_study_names_field_value_and_allowed(
    change: Callable[[dict[str, Any]], None], field: str, value: Any, fragments: tuple[str, ...]
) -> None:
    data = valid()
    StudySpec.from_mapping(data)  # the base is valid, so the change is what breaks it
    change(data)
    before = copy.deepcopy(data)
    with pytest.raises(InvalidInputError) as exc:
        StudySpec.from_mapping(data)
    err = exc.value
    assert err.field == field
    assert type(err.value) is type(value) and err.value == value
    assert str(err).startswith(f"{field}: got {value!r}; "), str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    assert data == before  # validation never changes its input


@pytest.mark.parametrize("searcher", [s for s in SEARCHERS if s != "grid"])
def test_max_trials_is_required_unless_the_search_is_a_grid(searcher: str) -> None:
    data = valid()
    data["budget"] = {}
    data["search"]["searcher"] = searcher
    with pytest.raises(InvalidInputError) as exc:
        StudySpec.from_mapping(data)
    assert exc.value.field == "budget.max_trials" and exc.value.value is None
    assert repr(searcher) in exc.value.allowed and "grid" in exc.value.allowed
    data["search"]["searcher"] = "grid"
    assert StudySpec.from_mapping(data).budget == Budget(max_trials=None)


@pytest.mark.parametrize("value", [[], "study", None, 3])
def test_study_must_be_a_table(value: Any) -> None:
    with pytest.raises(InvalidInputError) as exc:
        StudySpec.from_mapping(value)
    assert exc.value.field == "study" and exc.value.value == type(value).__name__


@pytest.mark.parametrize("entrypoint", ["train.py", "src/train.py", "./train.py", "a/b/c.py"])
def test_relative_python_entrypoints_are_accepted(entrypoint: str) -> None:
    data = valid()
    data["entrypoint"] = entrypoint
    assert StudySpec.from_mapping(data).entrypoint == entrypoint


def test_defaults_fill_in_the_optional_keys() -> None:
    data = {
        "name": "minimal",
        "objective": {"metric": "loss"},
        "budget": {"max_trials": 3},
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
    }
    spec = StudySpec.from_mapping(data)
    defaults = {f: StudySpec.__dataclass_fields__[f].default for f in ("entrypoint", "bundle")}
    assert spec.entrypoint == defaults["entrypoint"] and spec.bundle == defaults["bundle"]
    assert spec.objective.mode is Mode.MIN
    assert spec.search == SearchConfig()
    assert spec.fidelity == Fidelity()
    assert spec.resources == Resources()
    assert spec.budget == Budget(3)
    assert spec.space == SearchSpace.from_mapping(data["space"])


@pytest.mark.parametrize("low", [1, 4, 9])
def test_fidelity_max_defaults_to_min(low: int) -> None:
    data = valid()
    data["fidelity"] = {"min": low}
    assert StudySpec.from_mapping(data).fidelity.max == low


def test_gpu_memory_is_stored_as_a_float() -> None:
    data = valid()
    data["resources"]["min_gpu_memory_gb"] = 6
    res = StudySpec.from_mapping(data).resources
    assert type(res.min_gpu_memory_gb) is float and res.min_gpu_memory_gb == 6


@given(a=st.floats(allow_nan=False), b=st.floats(allow_nan=False))
@settings(max_examples=50, deadline=None)
def test_mode_better_is_strict_and_follows_the_direction(a: float, b: float) -> None:
    assert Mode.MIN.better(a, b) == (a < b)
    assert Mode.MAX.better(a, b) == (a > b)
    assert not Mode.MIN.better(a, a) and not Mode.MAX.better(a, a)


# --- files -------------------------------------------------------------------------------------


def test_load_study_file_refuses_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('name = "x"\n[objective\nmetric = "loss"\n')
    with pytest.raises(InvalidInputError) as exc:
        load_study_file(path)
    assert exc.value.field == "study file" and exc.value.value == str(path)
    assert "TOML" in exc.value.allowed


def test_load_study_file_refuses_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(InvalidInputError) as exc:
        load_study_file(path)
    assert exc.value.field == "study file" and "TOML" in exc.value.allowed


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_load_study_file_refuses_an_unreadable_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.toml"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(InvalidInputError) as exc:
        load_study_file(str(path))
    assert exc.value.field == "study file" and exc.value.value == str(path)
    assert "readable" in exc.value.allowed


def test_load_study_file_reports_schema_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    text = TEMPLATE.read_text()
    assert 'searcher = "tpe"' in text
    path.write_text(text.replace('searcher = "tpe"', 'searcher = "bayes"'))
    with pytest.raises(InvalidInputError) as exc:
        load_study_file(path)
    assert exc.value.field == "search.searcher" and exc.value.value == "bayes"


@pytest.mark.parametrize(("edits", "field", "allowed"), [
    ({'name = "digits-mlp"': 'name = "a\\nb\\u001b[31mred"'}, "name", "must be printable text"),
    ({"min_gpu_memory_gb = 0": "min_gpu_memory_gb = 8"}, "resources.min_gpu_memory_gb",
     "needs resources.gpus >= 1"),
    ({"gpus = 0": "gpus = 1", "min_gpu_memory_gb = 0": "min_gpu_memory_gb = 1e300"},
     "resources.min_gpu_memory_gb", "must be at most 4096"),
    # a metric trial.report(step, NAME=value) cannot take: the study never had a best trial
    ({'metric = "val_loss"': 'metric = "step"'}, "objective.metric", "must be a name trial"),
    ({'metric = "val_loss"': 'metric = "lambda"'}, "objective.metric", "must be a name trial"),
    ({'metric = "val_loss"': 'metric = "self"'}, "objective.metric", "must be a name trial"),
    # before, accepted: every trial trained one step, and the scheduler could stop none
    ({"[fidelity]                    # the `step` of trial.report: epochs here\n": "",
      "min = 1\nmax = 9\neta = 3\n": ""}, "fidelity.max",
     r"must be more than fidelity.min \(1\) for scheduler 'hyperband'"),
    ({"max = 9\n": "max = 1\n", 'scheduler = "hyperband"': 'scheduler = "median"'},
     "fidelity.max", r"must be more than fidelity.min \(1\) for scheduler 'median'"),
    # before, accepted: the choice split a row of `tunefleet trials` in two
    ({'choices = ["relu", "gelu", "tanh"]': 'choices = ["relu", "ge\\nlu", "tanh"]'},
     "space.activation.choices", "must be printable text"),
], ids=["control-characters-in-name", "gpu-memory-without-gpus", "gpu-memory-beyond-any",
        "metric-step", "metric-keyword", "metric-self", "no-fidelity", "no-steps-between",
        "choice-with-a-line-break"])
def test_a_new_study_file_is_held_to_the_rules_stored_studies_predate(
        tmp_path: Path, edits: dict[str, str], field: str, allowed: str) -> None:
    # before, accepted: a name that reached terminals with escapes, and studies that waited
    # forever for a GPU that could not exist; a stored study like it still parses (and so
    # rebuilds), as StudySpec.from_mapping alone does not hold it to these rules
    text = TEMPLATE.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    StudySpec.from_mapping(tomllib.loads(text))
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=f"^{field}: got .*; {allowed}"):
        load_study_file(path)


def test_the_digits_template_validates() -> None:
    raw = tomllib.loads(TEMPLATE.read_text())
    spec = load_study_file(TEMPLATE)
    assert spec == StudySpec.from_mapping(raw)
    assert spec.name == raw["name"] and spec.entrypoint == raw["entrypoint"]
    assert spec.objective.metric == raw["objective"]["metric"]
    assert spec.objective.mode.value == raw["objective"]["mode"]
    assert spec.budget.max_trials == raw["budget"]["max_trials"]
    assert (spec.fidelity.min, spec.fidelity.max) == (raw["fidelity"]["min"],
                                                      raw["fidelity"]["max"])
    assert list(spec.space) == list(raw["space"])
    # The entrypoint exists next to the study and reports the objective metric.
    train = (TEMPLATE.parent / spec.entrypoint).read_text()
    assert f"{spec.objective.metric}=" in train
    assert StudySpec.from_mapping(spec.to_mapping()) == spec


# --- round trip --------------------------------------------------------------------------------


def test_to_mapping_round_trips_the_example_study() -> None:
    spec = StudySpec.from_mapping(valid())
    mapping = spec.to_mapping()
    assert StudySpec.from_mapping(mapping) == spec
    assert StudySpec.from_mapping(mapping).to_mapping() == mapping


def test_to_mapping_leaves_an_unset_budget_out() -> None:
    data = valid()
    data["budget"] = {}
    data["search"]["searcher"] = "grid"
    spec = StudySpec.from_mapping(data)
    assert spec.to_mapping()["budget"] == {}
    assert StudySpec.from_mapping(spec.to_mapping()) == spec


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_to_mapping_from_mapping_round_trip(
    data: st.DataObject, study_strategy: st.SearchStrategy[dict[str, Any]]
) -> None:
    table = data.draw(study_strategy)
    spec = StudySpec.from_mapping(table)
    mapping = spec.to_mapping()
    again = StudySpec.from_mapping(mapping)
    assert again == spec
    assert again.to_mapping() == mapping
    assert spec.name == table["name"] and spec.bundle == table["bundle"]
    assert spec.search.seed == table["search"]["seed"]
    assert spec.search.max_running == table["search"].get("max_running")
    assert spec.fidelity == Fidelity(**table["fidelity"])


def test_enqueued_configurations_hold_each_value_in_its_parameters_type() -> None:
    data = valid()
    data["search"]["enqueue"] = [{"lr": 1e-3, "hidden": 64.0, "activation": "gelu"},
                                 {"lr": 1, "hidden": 16, "activation": "relu"}]
    data["space"]["lr"]["high"] = 1
    spec = StudySpec.from_mapping(data)
    assert spec.search.enqueue == ({"lr": 1e-3, "hidden": 64, "activation": "gelu"},
                                   {"lr": 1.0, "hidden": 16, "activation": "relu"})
    assert [type(c["hidden"]) for c in spec.search.enqueue] == [int, int]
    assert type(spec.search.enqueue[1]["lr"]) is float
    assert StudySpec.from_mapping(spec.to_mapping()) == spec
    assert data["search"]["enqueue"][0]["hidden"] == 64.0  # the input is left as it was


def test_a_grid_search_takes_no_enqueued_configurations() -> None:
    data = valid()
    data["search"].update(searcher="grid", enqueue=[GOOD])
    with pytest.raises(InvalidInputError, match="search.enqueue: .*grid searcher"):
        StudySpec.from_mapping(data)


def test_the_templates_enqueue_example_is_a_valid_study_file(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    text = TEMPLATE.read_text()
    assert "\n# enqueue = [" in text
    path.write_text(text.replace("\n# enqueue = [", "\nenqueue = [", 1))
    spec = load_study_file(path)
    assert spec.search.enqueue == ({"lr": 3e-3, "hidden": 64, "depth": 2, "dropout": 0.1,
                                    "weight_decay": 1e-4, "batch_size": 64,
                                    "activation": "relu"},)


@pytest.mark.parametrize("deadline", [
    datetime(2026, 12, 1, 18, tzinfo=UTC), "2026-12-01T18:00:00Z", "2026-12-01T19:00:00+01:00",
    datetime(2026, 12, 1, 19, tzinfo=timezone(timedelta(hours=1))), 1796148000.0,
])
def test_a_deadline_is_one_instant_however_it_is_written(deadline: Any) -> None:
    data = valid()
    data["budget"] = {"deadline": deadline}  # a deadline alone bounds a study
    spec = StudySpec.from_mapping(data)
    assert spec.budget.deadline == 1796148000.0 and spec.budget.max_trials is None
    assert StudySpec.from_mapping(spec.to_mapping()) == spec


def test_a_gpu_hour_budget_needs_gpus() -> None:
    data = valid()
    data["budget"] = {"max_gpu_hours": 2}
    assert StudySpec.from_mapping(data).budget.max_gpu_hours == 2.0
    data["resources"]["gpus"] = 0
    with pytest.raises(InvalidInputError, match="budget.max_gpu_hours: got 2.0; needs resources"):
        StudySpec.from_mapping(data)


def test_a_study_file_deadline_is_a_toml_date_time(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(TEMPLATE.read_text().replace(
        "max_trials = 16", "deadline = 2026-12-01T18:00:00Z\nmax_gpu_hours = 1.5", 1).replace(
        "gpus = 0 ", "gpus = 1 "))
    spec = load_study_file(path)
    assert (spec.budget.deadline, spec.budget.max_gpu_hours, spec.budget.max_trials) == (
        1796148000.0, 1.5, None)


@pytest.mark.parametrize("hours", [math.nan, math.inf, 2e6])
def test_a_gpu_hour_budget_that_is_no_finite_number_of_hours_is_refused(hours: float) -> None:
    data = valid()
    data["budget"]["max_gpu_hours"] = hours
    with pytest.raises(InvalidInputError, match=r"budget.max_gpu_hours: got .*in \(0, 1e\+06\]"):
        StudySpec.from_mapping(data)


def test_a_credit_budget_alone_bounds_a_study_on_cpu_slots_too() -> None:
    data = valid()
    data["budget"] = {"max_credits": 12.5}
    data["resources"]["gpus"] = 0
    spec = StudySpec.from_mapping(data)
    assert spec.budget.max_credits == 12.5 and spec.budget.max_trials is None
    assert StudySpec.from_mapping(spec.to_mapping()) == spec


@pytest.mark.parametrize("name", ["lr", "hidden"])
def test_an_enqueued_integer_beyond_a_double_is_refused_by_name(name: str) -> None:
    # a 401-digit TOML integer used to overflow in float() with a traceback; the message shows
    # the value's ends and its length, not all 401 digits
    data = valid()
    data["search"]["enqueue"] = [{**GOOD, name: 10**400}]
    before = copy.deepcopy(data)
    with pytest.raises(InvalidInputError) as exc:
        StudySpec.from_mapping(data)
    assert exc.value.field == f"search.enqueue[0].{name}" and exc.value.value == 10**400
    assert "(401 characters)" in str(exc.value) and len(str(exc.value)) < 250
    assert data == before


def test_too_many_enqueued_configurations_are_counted_not_echoed() -> None:
    data = valid()
    data["budget"]["max_trials"] = 5000
    data["search"]["enqueue"] = [GOOD] * 1001
    with pytest.raises(InvalidInputError) as exc:
        StudySpec.from_mapping(data)
    assert str(exc.value).startswith(
        "search.enqueue: got '1,001 configurations'; must be a list of at most 1000 tables")
