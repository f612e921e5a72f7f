"""Redundant re-execution: which finished trials are run again, and what a re-run proves.

A study's ``[verification]`` settings choose a deterministic sample of completed trials
(``fraction``) and, when ``best``, its best trial; each is run again on a *different* node with
the same configuration. The two final values agree when their relative difference is within
``tolerance``; a disagreement flags the node that produced the original result and halves its
reputation, an agreement raises it a little (up to 1). Pure functions, no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import math

__all__ = ["VerificationState", "sampled", "agrees", "reputation_after", "shown_state"]

AGREE_BONUS = 0.05
DISAGREE_FACTOR = 0.5


class VerificationState(enum.Enum):
    PENDING = "pending"  # waiting for a node other than the original one
    RUNNING = "running"
    VERIFIED = "verified"  # the re-run agreed
    DISPUTED = "disputed"  # the re-run disagreed beyond the tolerance
    FAILED = "failed"  # the re-run could not produce a value


def sampled(study_id: str, trial: int, fraction: float) -> bool:
    """Whether trial ``trial`` of ``study_id`` is in the verified sample (stable per trial)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{study_id}/{trial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def agrees(original: float, value: float, tolerance: float) -> bool:
    """True when ``value`` is within ``tolerance`` (relative) of ``original``."""
    if not (math.isfinite(original) and math.isfinite(value)):
        return False
    return abs(value - original) <= tolerance * max(abs(original), 1e-12)


def reputation_after(reputation: float, agreed: bool) -> float:
    if agreed:
        return min(1.0, reputation + AGREE_BONUS)
    return reputation * DISAGREE_FACTOR


def shown_state(state: str | None) -> str:
    """How a verification state is shown to researchers."""
    return {
        None: "none", "pending": "pending", "running": "pending", "verified": "verified",
        "disputed": "disputed", "failed": "unverifiable",
    }[state]
