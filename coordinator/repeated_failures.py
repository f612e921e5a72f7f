"""Telling a trial's own deterministic failure from a node's.

A trial whose training code exits with an error is retried (up to the coordinator's
``max_attempts``) because the cause may be the node: a driver, a full disk, a GPU with less
memory. But when the retry on *another* node ends with the same exit code and the same last
line of error output (for Python, the exception and its message), the cause is the trial itself,
and further attempts would only spend the pool's time on the same error.

Only exits of the training process with an error code count (the agent reports them as ``exit
code N`` followed by the end of its stderr). A process killed by a signal (the out-of-memory
killer, say), one past a resource limit and one the sandbox could not launch (exit codes 126
and 127) may owe it to the node, as limits, memory and accounts differ between providers;
agent-side errors (a bundle that could not be fetched, an agent shutting
down) are the node's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from coordinator.models import Attempt, AttemptState

__all__ = ["failure_signature", "same_failure_elsewhere"]

_EXIT_CODE = re.compile(r"exit code ([1-9][0-9]*)")
# the sandbox launcher's own failures (limits, accounts, exec), the node's: see node_agent.sandbox
_LAUNCH_CODES = (126, 127)


def failure_signature(error: str | None) -> tuple[str, str] | None:
    """``(exit code line, last non-empty line)`` of a training process's exit with an error
    code as the agent reports it; None for any other error, or one with no output after it."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    match = _EXIT_CODE.fullmatch(lines[0]) if len(lines) >= 2 else None
    if match is None or int(match[1]) in _LAUNCH_CODES:
        return None
    return lines[0], lines[-1]


def same_failure_elsewhere(failed: Attempt, attempts: Iterable[Attempt]) -> Attempt | None:
    """An earlier failed attempt of the same trial, on another node, with ``failed``'s
    signature; None if there is none (or ``failed`` has no signature)."""
    signature = failure_signature(failed.error)
    if signature is None:
        return None
    for earlier in attempts:
        if (earlier.id != failed.id and earlier.state is AttemptState.FAILED
                and earlier.study_id == failed.study_id
                and earlier.trial_number == failed.trial_number
                and earlier.node_id != failed.node_id
                and failure_signature(earlier.error) == signature):
            return earlier
    return None
