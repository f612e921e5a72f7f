"""Plain Python views of studies and trials, as the SDK returns them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunefleet import serde
from tunefleet.v1 import researcher_pb2

__all__ = ["TrialResult", "StudyStatus", "trial_from_proto", "status_from_proto",
           "in_study_order", "space_order"]


def in_study_order(params: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """``params`` with the names of ``order`` (the study's ``[space]``) first, in that order,
    then any others by name: the same order every time (a protobuf map's is not)."""
    listed = set(order)
    known = [name for name in order if name in params]
    rest = sorted(name for name in params if name not in listed)
    return {name: params[name] for name in [*known, *rest]}


def space_order(message: researcher_pb2.StudyInfo) -> tuple[str, ...]:
    """The study's parameter names in its ``[space]`` order (empty where the message left
    its space out, as ListStudies does)."""
    return tuple(p.name for p in message.spec.space)


@dataclass(frozen=True)
class TrialResult:
    trial_id: int
    state: str
    params: dict[str, Any]
    value: float | None
    step: int
    attempts: int
    node_id: str = ""
    error: str = ""
    reports: list[dict[str, Any]] = field(default_factory=list)
    verification: str = "none"  # none | pending | verified | disputed | unverifiable
    verification_detail: str = ""
    # how hard it used its GPUs (its node's NVML samples); None: a CPU trial, or not measured
    gpu_utilization: float | None = None  # percent
    gpu_memory_peak_gb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The trial for JSON: a value that is not a finite number (a diverged trial's inf) is
        null, as in its reports, so that the output is standard JSON."""
        out = {
            "trial_id": self.trial_id, "state": self.state, "params": self.params,
            "value": _finite(self.value) if self.value is not None else None,
            "step": self.step, "attempts": self.attempts,
            "node_id": self.node_id, "error": self.error,
            "verification": self.verification, "verification_detail": self.verification_detail,
            "gpu_utilization": self.gpu_utilization,
            "gpu_memory_peak_gb": self.gpu_memory_peak_gb,
        }
        if self.reports:
            out["reports"] = self.reports
        return out


@dataclass(frozen=True)
class StudyStatus:
    study_id: str
    name: str
    state: str
    metric: str
    mode: str
    counts: dict[str, int]
    best: TrialResult | None
    max_trials: int | None
    created_at: float
    ended_at: float
    end_reason: str = ""  # why it ended (its budget, a limit, a stop); "" while it runs
    gpu_hours: float = 0.0  # its cost: GPU time its attempts held, lease to end
    slot_hours: float = 0.0  # the same per attempt, CPU slots included
    credits: float = 0.0  # the same time at the coordinator's prices
    waiting_for: str = ""  # while it runs and no trial does: why (no node could run them)

    def cost_text(self) -> str:
        """Its cost in words: ``0.42 credits (0.42 GPU-hours, 0.61 slot-hours)``, GPU-hours
        left out for a study on CPU slots."""
        hours = f"{self.slot_hours:.3g} slot-hours"
        if self.gpu_hours:
            hours = f"{self.gpu_hours:.3g} GPU-hours, {hours}"
        return f"{self.credits:.3g} credits ({hours})"

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id, "name": self.name, "state": self.state,
            "objective": {"metric": self.metric, "mode": self.mode}, "counts": self.counts,
            "max_trials": self.max_trials, "end_reason": self.end_reason,
            "cost": {"credits": self.credits, "gpu_hours": self.gpu_hours,
                     "slot_hours": self.slot_hours},
            "best": None if self.best is None else self.best.to_dict(),
        }


def trial_from_proto(message: researcher_pb2.TrialInfo, order: Sequence[str] = ()
                     ) -> TrialResult:
    """A trial; its params in the study's ``[space]`` order ``order`` (see
    :func:`in_study_order`)."""
    return TrialResult(
        trial_id=message.trial_id, state=message.state,
        params=in_study_order(serde.params_from_proto(message.params), order),
        value=message.value if message.HasField("value") else None,
        step=message.step, attempts=message.attempts, node_id=message.node_id,
        error=message.error,
        reports=[{"step": p.step, **{k: _finite(v) for k, v in p.metrics.items()}}
                 for p in message.reports],
        verification=message.verification or "none",
        verification_detail=message.verification_detail,
        gpu_utilization=(message.gpu_utilization if message.HasField("gpu_utilization")
                         else None),
        gpu_memory_peak_gb=(message.gpu_memory_peak_gb
                            if message.HasField("gpu_memory_peak_gb") else None),
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def status_from_proto(message: researcher_pb2.StudyInfo) -> StudyStatus:
    c = message.counts
    budget = message.spec.budget
    return StudyStatus(
        study_id=message.study_id, name=message.name, state=message.state,
        metric=message.spec.objective.metric, mode=message.spec.objective.mode,
        counts={"pending": c.pending, "running": c.running, "completed": c.completed,
                "pruned": c.pruned, "failed": c.failed},
        best=(trial_from_proto(message.best, space_order(message)) if message.HasField("best")
              else None),
        max_trials=budget.max_trials if budget.HasField("max_trials") else None,
        created_at=message.created_at, ended_at=message.ended_at, end_reason=message.end_reason,
        gpu_hours=message.gpu_hours, slot_hours=message.slot_hours, credits=message.credits,
        waiting_for=message.waiting_for,
    )
