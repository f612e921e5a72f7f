"""Conversion of the hub's views into the protobuf messages researchers receive."""

from __future__ import annotations

from coordinator.hub import StudyView
from coordinator.models import Trial, TrialState
from tunefleet import serde
from tunefleet.v1 import common_pb2, researcher_pb2

__all__ = ["study_info_to_proto", "trial_info_to_proto"]


def trial_info_to_proto(
    trial: Trial, node_id: str = "", reports: list[dict[str, object]] | None = None
) -> researcher_pb2.TrialInfo:
    message = researcher_pb2.TrialInfo(
        trial_id=trial.number, state=trial.state.value, step=trial.step or 0,
        attempts=trial.attempts, node_id=node_id, error=trial.error or "",
    )
    if trial.value is not None:
        message.value = trial.value
    serde.params_to_proto(trial.params, message.params)
    for r in reports or []:
        point = message.reports.add(step=int(r["step"]))  # type: ignore[call-overload]
        point.metrics.update(r["metrics"])  # type: ignore[call-overload]
    return message


def study_info_to_proto(view: StudyView) -> researcher_pb2.StudyInfo:
    c = view.counts
    message = researcher_pb2.StudyInfo(
        study_id=view.study.id, name=view.study.name, state=view.study.state.value,
        spec=common_pb2.StudySpec.FromString(view.study.spec),
        counts=researcher_pb2.TrialCounts(
            pending=c[TrialState.PENDING], running=c[TrialState.RUNNING],
            completed=c[TrialState.COMPLETED], pruned=c[TrialState.PRUNED],
            failed=c[TrialState.FAILED],
        ),
        owner_key_id=view.study.owner_key_id, created_at=view.study.created_at,
        ended_at=view.study.ended_at or 0.0,
    )
    if view.best is not None:
        message.best.CopyFrom(trial_info_to_proto(view.best))
    return message
