"""The trial API that training code imports: ``from tunefleet import trial``.

- ``trial.params``: the configuration to train with (a dict).
- ``trial.max_step``: the last step to run (the study's ``fidelity.max``), or ``None``.
- ``trial.report(step, **metrics)``: report metrics at a step (an epoch, say); steps increase,
  up to ``max_step``; one report's JSON line is at most ``MAX_REPORT_BYTES`` (64 KiB). A report
  that breaks a rule raises :class:`~tunefleet.errors.InvalidInputError` and sends nothing.
- ``trial.should_stop()``: ``True`` once the scheduler has decided to stop this trial; the code
  should then return promptly (the agent ends the process group after a grace period anyway).
  Right after a report it waits for the scheduler's decision on that report, up to
  ``DECISION_WAIT_SECONDS``: a trial stopped at a step does not train one more.

Under a node agent the trial context comes from the environment: ``TUNEFLEET_TRIAL`` (JSON with
params and fidelity), ``TUNEFLEET_REPORT_FD`` (a pipe to the agent, JSON lines) and
``TUNEFLEET_CONTROL_FD`` (a pipe from the agent: a ``stop`` line, or ``continue STEP`` once the
report at STEP was let through). Without them, the script runs standalone: reports are printed
and ``should_stop`` is always ``False``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import select
import sys
import threading
import time
from typing import Any

from tunefleet.errors import InvalidInputError

# `params` and `max_step` are served by the module's __getattr__.
__all__ = ["params", "max_step", "report", "should_stop", "TrialContext", "context"]  # noqa: F822

MAX_REPORT_BYTES = 64 * 1024  # one report's JSON line to the agent, newline included
DECISION_WAIT_SECONDS = 1.0  # should_stop's longest wait for the decision on the last report

ENV_TRIAL = "TUNEFLEET_TRIAL"
ENV_REPORT_FD = "TUNEFLEET_REPORT_FD"
ENV_CONTROL_FD = "TUNEFLEET_CONTROL_FD"


class TrialContext:
    """The state of the running trial in this process."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_TRIAL)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        self.params: dict[str, Any] = dict(data.get("params", {}))
        self.max_step: int | None = data.get("fidelity_max")
        self.trial_id: int | None = data.get("trial_id")
        self.attempt_id: int | None = data.get("attempt_id")
        self._last_step: int | None = None
        self._stop = False
        self._lock = threading.Lock()
        report_fd = env.get(ENV_REPORT_FD)
        control_fd = env.get(ENV_CONTROL_FD)
        self._out = os.fdopen(int(report_fd), "w", buffering=1) if report_fd else None
        self._control = int(control_fd) if control_fd else None
        self._control_buffer = b""
        self._undecided: int | None = None  # the last reported step, until its decision

    @property
    def attached(self) -> bool:
        """True when running under a node agent."""
        return self._out is not None

    def report(self, step: int, **metrics: float) -> None:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not (
                0 <= step < 2**62):
            raise InvalidInputError("step", step, "must be an integer in [0, 2**62)")
        step = int(step)  # a numpy integer, say, as the int it is
        if self.max_step is not None and step > self.max_step:
            raise InvalidInputError(
                "step", step, f"must be at most trial.max_step ({self.max_step}, the study's "
                "fidelity.max): the scheduler's decisions are made in those steps")
        if not metrics:
            raise InvalidInputError("metrics", metrics, "give at least one, e.g. val_loss=0.3")
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError("metrics", name, "a metric's name must be text that "
                                        "UTF-8 can encode") from None
            if isinstance(value, (bool, str, bytes, bytearray)) or not hasattr(
                type(value), "__float__"
            ):
                raise InvalidInputError(f"metrics.{name}", value, "must be a number")
            try:
                clean[name] = float(value)
            except (TypeError, ValueError, OverflowError):
                raise InvalidInputError(f"metrics.{name}", value, "must be a number") from None
        line = json.dumps({"type": "report", "step": step, "metrics": clean}, allow_nan=True)
        if len(line) + 1 > MAX_REPORT_BYTES:  # ASCII: json.dumps escapes the rest
            raise InvalidInputError(
                "metrics", f"{len(clean):,} metrics",
                f"make a report of {len(line) + 1:,} bytes, over the {MAX_REPORT_BYTES:,} one "
                "report may take: report fewer metrics per step, or shorter names")
        with self._lock:
            if self._last_step is not None and step <= self._last_step:
                raise InvalidInputError(
                    "step", step, f"must increase; the previous report was at step {self._last_step}"
                )
            self._last_step = step
            if self._out is None:
                shown = " ".join(f"{k}={_fmt(v)}" for k, v in clean.items())
                print(f"[trial] step={step} {shown}", flush=True)
                return
            try:
                self._out.write(line + "\n")
                self._undecided = step
            except BrokenPipeError:
                self._stop = True

    def should_stop(self) -> bool:
        """Whether the scheduler stopped this trial. Reads what the agent said; while the last
        report's decision has not come, waits for it up to ``DECISION_WAIT_SECONDS``."""
        control = self._control
        if self._stop or control is None:
            return self._stop
        deadline = time.monotonic() + DECISION_WAIT_SECONDS
        self._read_control(control, 0.0)
        while not self._stop and self._undecided is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read_control(control, left)
        return self._stop

    def _read_control(self, control: int, timeout: float) -> None:
        """Take in what the agent wrote (waiting up to ``timeout`` for the first bytes)."""
        while True:
            ready, _, _ = select.select([control], [], [], timeout)
            if not ready:
                break
            timeout = 0.0
            chunk = os.read(control, 4096)
            if not chunk:  # the agent went away: stop
                self._stop = True
                break
            self._control_buffer += chunk
        *lines, self._control_buffer = self._control_buffer.split(b"\n")
        for line in lines:
            words = line.split()
            if words == [b"stop"]:
                self._stop = True
            elif (len(words) == 2 and words[0] == b"continue" and words[1].isdigit()
                  and self._undecided is not None and int(words[1]) >= self._undecided):
                self._undecided = None


def _fmt(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


_context: TrialContext | None = None


def context() -> TrialContext:
    """The process-wide trial context, created on first use."""
    global _context
    if _context is None:
        _context = TrialContext()
    return _context


def report(step: int, **metrics: float) -> None:
    """Report ``metrics`` at ``step``; see the module docstring."""
    context().report(step, **metrics)


def should_stop() -> bool:
    """Whether the scheduler has asked this trial to stop."""
    return context().should_stop()


_FORWARDED = frozenset({"params", "max_step", "trial_id", "attempt_id", "attached"})


def __getattr__(name: str) -> Any:
    """``trial.params``, ``max_step``, ``trial_id``, ``attempt_id`` and ``attached`` (whether a
    node agent runs this process) read the process-wide context."""
    if name in _FORWARDED:
        return getattr(context(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if sys.platform == "win32":  # pragma: no cover
    raise ImportError("tunefleet.trial needs a POSIX system")
