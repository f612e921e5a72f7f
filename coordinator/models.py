"""Domain objects and states of the coordinator's store."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StudyState", "TrialState", "AttemptState", "Study", "Trial", "Attempt", "Node"]


class StudyState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"


class TrialState(enum.Enum):
    PENDING = "pending"  # waiting for a (new) attempt
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETED, TrialState.PRUNED, TrialState.FAILED)


class AttemptState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"
    LOST = "lost"  # its lease expired; late reports are refused


@dataclass
class Study:
    id: str
    name: str
    owner_key_id: str
    spec: bytes  # serialized tunefleet.v1.StudySpec
    bundle_digest: str
    state: StudyState
    created_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    scheduling_defaults: int = 1  # coordinator.scheduling.DEFAULTS_VERSION at submission


@dataclass
class Trial:
    study_id: str
    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    step: int | None = None
    attempts: int = 0
    error: str | None = None
    created_at: float = 0.0
    ended_at: float | None = None


@dataclass
class Attempt:
    id: int
    study_id: str
    trial_number: int
    node_id: str
    state: AttemptState
    gpu_uuids: list[str] = field(default_factory=list)
    lease_deadline: float = 0.0
    started_at: float = 0.0
    ended_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    gpu_seconds: float | None = None
    wall_seconds: float | None = None
    late_reports: int = 0
    purpose: str = "trial"  # trial | verify (a re-run of a finished trial on another node)
    gpu_utilization: float | None = None  # percent, mean over its GPUs (node-measured)
    gpu_memory_peak_gb: float | None = None
    price_gpu_hour: float = 0.0  # credits per GPU-hour and per slot-hour it was leased at
    price_slot_hour: float = 0.0
    seen_at: float | None = None  # its last sign of life (None: stored before it was kept)


@dataclass
class Node:
    id: str
    public_key: bytes
    name: str
    inventory: bytes  # serialized tunefleet.v1.Inventory
    registered_at: float
    last_seen: float
    reputation: float = 1.0
    flagged: int = 0
