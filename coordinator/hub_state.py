"""Types the hub and its parts share, and the state every part of the hub sees.

:class:`HubState` declares the attributes and the cross-part methods of
:class:`coordinator.hub.Hub`; the access and verification parts are mixins over it, so that each
stays a small module while the hub remains one object driven from one thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from coordinator.models import Attempt, Study, Trial, TrialState
from coordinator.scheduling import Tuner
from coordinator.store import Store
from tunefleet.envelope import SequenceGuard
from tunefleet.errors import StateError
from tunefleet.study import StudySpec
from tunefleet.v1 import node_pb2

__all__ = [
    "finished_at", "gpu_usage", "MAX_GPU_MEMORY_GB",
    "Outbox", "PermissionDeniedError", "StudyRuntime", "NodeSession", "StudyView", "HubState",
    "stop_message", "ack_message",
]

log = logging.getLogger("coordinator.hub")
Outbox = list[tuple[str, node_pb2.CoordinatorMessage]]


class PermissionDeniedError(StateError):
    """The caller is authenticated but not allowed to do this."""


@dataclass
class StudyRuntime:
    study: Study
    spec: StudySpec
    tuner: Tuner
    limit_reason: str | None = None  # set once a GPU-hour budget or the deadline is reached


@dataclass
class NodeSession:
    """A connected node as the hub sees it."""

    node_id: str
    inventory: node_pb2.Inventory
    draining: bool = False


@dataclass
class StudyView:
    study: Study
    spec: StudySpec
    counts: dict[TrialState, int]
    best: Trial | None
    best_verification: dict[str, object] | None = None
    gpu_hours: float = 0.0  # GPU time its attempts held, lease to end (running ones: to now)
    slot_hours: float = 0.0  # the same, one per attempt whatever its GPUs (CPU slots too)
    credits: float = 0.0  # the same time at the prices each attempt was leased at
    best_node: str = ""  # the node of the best trial's latest attempt
    waiting_for: str = ""  # while it runs and no trial does: why no connected node runs them



class HubState:
    """What every part of the hub reads and writes (set up by ``Hub.__init__``)."""

    store: Store
    clock: Callable[[], float]
    lease_seconds: float
    max_attempts: int
    price_gpu_hour: float
    price_slot_hour: float
    operator_key_id: str | None
    open_admission: bool
    sessions: dict[str, NodeSession]
    studies: dict[str, StudyRuntime]
    declined: set[tuple[str, str]]
    banned: set[str]
    guard: SequenceGuard
    _wake: bool

    def assign_all(self) -> Outbox:
        raise NotImplementedError

    def _unit(self, savepoint: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    def stop_study(self, study_id: str, key_id: str, reason: str = "stopped by its owner"
                   ) -> Outbox:
        raise NotImplementedError

    def _lose(self, attempt: Attempt, reason: str, now: float,
              held_until: float | None = None) -> Outbox:
        raise NotImplementedError

    def _maybe_complete(self, runtime: StudyRuntime, now: float) -> None:
        raise NotImplementedError

    def _assignment(self, runtime: StudyRuntime, attempt: Attempt, trial: Trial
                    ) -> node_pb2.CoordinatorMessage:
        raise NotImplementedError


def stop_message(attempt_id: int, reason: str) -> node_pb2.CoordinatorMessage:
    return node_pb2.CoordinatorMessage(stop=node_pb2.StopOrder(attempt_id=attempt_id, reason=reason))


def ack_message(attempt_id: int, seq: int, decision: str) -> node_pb2.CoordinatorMessage:
    return node_pb2.CoordinatorMessage(
        report_ack=node_pb2.ReportAck(attempt_id=attempt_id, seq=seq, decision=decision)
    )


MAX_GPU_MEMORY_GB = 4096.0


def finished_at(attempt: Attempt, wall_seconds: float, now: float, lease_seconds: float
                ) -> float:
    """When an attempt whose end the coordinator learns at ``now`` ended, for the ledger:
    ``now``, unless nothing was heard from its node for longer than a lease before (the
    coordinator, or the node's connection, was away while it finished): then the lease plus
    the child's run time as its node counted it, never before the attempt's last sign of life
    nor after ``now``."""
    seen = attempt.seen_at
    if seen is None or now - seen <= lease_seconds or not (
            math.isfinite(wall_seconds) and wall_seconds > 0):
        return now
    return min(now, max(seen, attempt.started_at + wall_seconds))


def gpu_usage(done: node_pb2.AttemptFinished, attempt: Attempt) -> tuple[float | None, float | None]:
    """The GPU figures a node sent with an attempt's end, where they are plausible: utilization
    in [0, 100] percent and memory in [0, 4096] GiB, for an attempt that held GPUs. Others are
    dropped with a warning; they only inform, and no decision rests on them."""
    if not attempt.gpu_uuids or not done.HasField("gpu_utilization") or not done.HasField(
            "gpu_memory_peak_gb"):
        return None, None
    util, memory = done.gpu_utilization, done.gpu_memory_peak_gb
    if 0.0 <= util <= 100.0 and 0.0 <= memory <= MAX_GPU_MEMORY_GB:  # NaN fails both
        return util, memory
    log.warning("attempt %d: implausible GPU figures from node %s (utilization %r, memory %r "
                "GiB) dropped", attempt.id, attempt.node_id[:8], util, memory)
    return None, None
