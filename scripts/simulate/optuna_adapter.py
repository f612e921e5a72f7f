"""Optuna's TPE sampler with its Hyperband pruner, behind the tuner's ask/tell interface."""

from __future__ import annotations

from typing import Any

import optuna

from coordinator.scheduling import AskStatus, Decision, Suggestion
from tunefleet.space import CategoricalParam, FloatParam, SearchSpace
from tunefleet.study import Fidelity

__all__ = ["OptunaTuner"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunaTuner:
    """``TPESampler(multivariate=True, constant_liar=True)`` + ``HyperbandPruner``, seeded.

    Constant liar is Optuna's own recommendation for parallel workers; multivariate is its
    stronger TPE variant. Both only help the baseline.
    """

    def __init__(self, space: SearchSpace, fidelity: Fidelity, seed: int) -> None:
        self.space = space
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=fidelity.min, max_resource=fidelity.max, reduction_factor=fidelity.eta
        )
        self.study = optuna.create_study(sampler=sampler, pruner=pruner, study_name=f"s{seed}")
        self._trials: dict[int, Any] = {}
        self._last: dict[int, float] = {}
        self._pruned: set[int] = set()

    def ask(self) -> Suggestion:
        trial = self.study.ask()
        params: dict[str, Any] = {}
        for name, p in self.space.items():
            if isinstance(p, CategoricalParam):
                params[name] = trial.suggest_categorical(name, list(p.choices))
            elif isinstance(p, FloatParam):
                params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
            else:
                params[name] = trial.suggest_int(name, p.low, p.high, log=p.log)
        self._trials[trial.number] = trial
        return Suggestion(AskStatus.READY, trial.number, params)

    def tell_report(self, trial_id: int, step: int, value: float) -> Decision:
        trial = self._trials[trial_id]
        trial.report(value, step)
        self._last[trial_id] = value
        if trial.should_prune():
            self._pruned.add(trial_id)
            return Decision.STOP
        return Decision.CONTINUE

    def tell_complete(self, trial_id: int) -> None:
        trial = self._trials.pop(trial_id)
        if trial_id in self._pruned:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif trial_id in self._last:
            self.study.tell(trial, self._last[trial_id])
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
