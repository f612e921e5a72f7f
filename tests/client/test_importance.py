"""Parameter importances (pure functions; the CLI runs them in tests/integration)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from client.importance import MIN_TRIALS, common_step, importances, study_importance
from client.results import TrialResult
from tunefleet.errors import TunefleetError


def synthetic(n: int, seed: int = 0) -> tuple[list[dict[str, object]], list[float]]:
    """val_loss depends strongly on lr (log scale), a little on dropout, not on activation."""
    rng = np.random.default_rng(seed)
    configs, values = [], []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        dropout = float(rng.uniform(0, 0.5))
        activation = str(rng.choice(["relu", "gelu", "tanh"]))
        configs.append({"lr": lr, "dropout": dropout, "activation": activation})
        values.append((math.log10(lr) + 2.5) ** 2 + 0.8 * dropout + rng.normal(0, 0.02))
    return configs, values


def test_the_parameter_that_drives_the_metric_comes_first() -> None:
    configs, values = synthetic(60)
    r2, shares = importances(configs, values)
    assert list(shares) == ["lr", "dropout", "activation"]
    assert shares["lr"] > 0.7 and shares["activation"] < 0.05
    assert sum(shares.values()) == pytest.approx(1.0)
    assert r2 > 0.8
    assert importances(configs, values) == (r2, shares)  # deterministic for a seed


def test_noise_is_reported_as_unexplained() -> None:
    configs, _ = synthetic(40)
    noise = np.random.default_rng(7).normal(size=40).tolist()
    r2, shares = importances(configs, noise)
    assert r2 < 0.2
    assert sum(shares.values()) == pytest.approx(1.0) or sum(shares.values()) == 0.0


def test_too_few_trials_are_refused_with_the_count() -> None:
    configs, values = synthetic(MIN_TRIALS - 1)
    with pytest.raises(TunefleetError, match=f"at least {MIN_TRIALS} trials.*got {MIN_TRIALS - 1}"):
        importances(configs, values)


def trial(number: int, steps: int, params: dict[str, object]) -> TrialResult:
    reports = [{"step": s, "loss": float(params["x"]) * s} for s in range(1, steps + 1)]  # type: ignore[arg-type]
    return TrialResult(number, "pruned", params, None, steps, 1, reports=reports)


def test_trials_stopped_at_different_steps_are_read_at_one_common_step() -> None:
    # as Hyperband leaves them: 20 reach step 1, 10 step 3, 3 step 9, 1 step 27
    reached = [1] * 10 + [3] * 7 + [9] * 2 + [27]
    trials = [trial(i, s, {"x": i / 20}) for i, s in enumerate(reached)]
    assert common_step(trials, "loss") == 3  # 10 of 20 reached it: half the trials
    assert common_step(trials, "accuracy") is None  # never reported
    found = study_importance(trials, "loss")
    assert (found.step, found.trials, list(found.by_param)) == (3, 10, ["x"])
    assert found.to_dict()["importance"] == {"x": pytest.approx(1.0)}


def test_a_study_without_enough_trials_at_any_step_is_refused() -> None:
    trials = [trial(i, 2, {"x": i / 5}) for i in range(5)]
    with pytest.raises(TunefleetError, match="5 of this study's 5 trials reported one at all$"):
        study_importance(trials, "loss")
    # a misspelled metric: before, "this study has 5 trials with reports", as if too few
    with pytest.raises(TunefleetError, match="0 of this study's 5 trials reported one at all "
                       r"\(the metrics they reported: loss\)"):
        study_importance(trials, "val_loss")
