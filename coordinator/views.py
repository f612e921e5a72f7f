"""Conversion of the hub's views into the protobuf messages researchers receive."""

from __future__ import annotations

from typing import Any

from coordinator.hub import StudyView
from coordinator.models import StudyState, Trial, TrialState
from coordinator.verification import shown_state
from tunefleet import serde
from tunefleet.v1 import common_pb2, researcher_pb2

__all__ = ["study_info_to_proto", "trial_info_to_proto"]


def _verification_detail(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    where = f"node {str(row['node_id'])[:8]}" if row["node_id"] else "another node"
    if row["state"] in ("verified", "disputed") and row["value"] is not None:
        return (f"{row['reason']}: re-run on {where} gave {row['value']:.6g} "
                f"(original {row['original_value']:.6g} on node {row['original_node_id'][:8]})")
    if row["state"] == "failed":
        return f"{row['reason']}: no other node could re-run it"
    return f"{row['reason']}: waiting for a re-run on {where}"


def trial_info_to_proto(
    trial: Trial, node_id: str = "", reports: list[dict[str, object]] | None = None,
    verification: dict[str, Any] | None = None,
) -> researcher_pb2.TrialInfo:
    message = researcher_pb2.TrialInfo(
        trial_id=trial.number, state=trial.state.value, step=trial.step or 0,
        attempts=trial.attempts, node_id=node_id, error=trial.error or "",
        verification=shown_state(None if verification is None else verification["state"]),
        verification_detail=_verification_detail(verification),
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
        ended_at=view.study.ended_at or 0.0, end_reason=view.study.end_reason or "",
        gpu_hours=view.gpu_hours, slot_hours=view.slot_hours, credits=view.credits,
        waiting_for=view.waiting_for,
    )
    if view.best is not None:
        message.best.CopyFrom(trial_info_to_proto(view.best, view.best_node,
                                                  verification=view.best_verification))
        if (view.best_verification is None and view.spec.verification.best
                and view.study.state is not StudyState.RUNNING):
            # a study a limit or its owner ended re-runs nothing (it would spend past it)
            message.best.verification_detail = (
                f"not re-run: the study ended ({view.study.end_reason or view.study.state.value})"
                " before a re-run of its best trial on another node")
    return message
