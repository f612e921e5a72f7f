"""FIFO: every trial runs to its full fidelity."""

from __future__ import annotations

from coordinator.scheduling._base import Decision, TrialScheduler

__all__ = ["FIFOScheduler"]


class FIFOScheduler(TrialScheduler):
    """Never stops a trial early."""

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        return Decision.CONTINUE
