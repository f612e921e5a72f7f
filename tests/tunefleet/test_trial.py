"""The trial API: standalone printing, report validation, and the pipes to a node agent."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tunefleet import trial
from tunefleet.errors import InvalidInputError
from tunefleet.trial import ENV_CONTROL_FD, ENV_REPORT_FD, ENV_TRIAL, TrialContext

TRIAL = {
    "params": {"lr": 0.003, "hidden": 64, "activation": "gelu", "bn": True},
    "fidelity_max": 9,
    "trial_id": 4,
    "attempt_id": 11,
}


class Agent:
    """The node agent's ends of the two pipes of one attached :class:`TrialContext`."""

    def __init__(self, trial_data: dict[str, Any] | None = TRIAL, control: bool = True) -> None:
        self._report_r, report_w = os.pipe()
        self._control_r: int | None = None
        self._control_w: int | None = None
        if control:
            self._control_r, self._control_w = os.pipe()
        env = {ENV_REPORT_FD: str(report_w)}  # the context takes ownership of report_w
        if control:
            env[ENV_CONTROL_FD] = str(self._control_r)
        if trial_data is not None:
            env[ENV_TRIAL] = json.dumps(trial_data)
        self.ctx = TrialContext(env)
        self._buffer = b""

    def read_report(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON line from the trial; fail rather than hang if none comes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._report_r], [], [], deadline - time.monotonic())
            assert ready, f"no report within {timeout} s"
            chunk = os.read(self._report_r, 65536)
            assert chunk, "the report pipe was closed"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def nothing_pending(self) -> bool:
        ready, _, _ = select.select([self._report_r], [], [], 0.05)
        return not ready and not self._buffer

    def send(self, data: bytes) -> None:
        assert self._control_w is not None
        os.write(self._control_w, data)

    def hang_up_control(self) -> None:
        assert self._control_w is not None
        os.close(self._control_w)
        self._control_w = None

    def hang_up_reports(self) -> None:
        if self._report_r is not None:
            os.close(self._report_r)
            self._report_r = None  # type: ignore[assignment]

    def close(self) -> None:
        out = self.ctx._out  # the trial owns the write end; close it through its file object
        if out is not None:
            with contextlib.suppress(BrokenPipeError):
                out.close()
        self.hang_up_reports()
        for fd in (self._control_r, self._control_w):
            if fd is not None:
                os.close(fd)


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.close()


# --- standalone --------------------------------------------------------------------------------


def parse_printed(line: str) -> tuple[int, dict[str, float]]:
    prefix, step_part, *metric_parts = line.split(" ")
    assert prefix == "[trial]" and step_part.startswith("step=")
    metrics = {}
    for part in metric_parts:
        key, value = part.split("=", 1)
        metrics[key] = float(value)
    return int(step_part.removeprefix("step=")), metrics


def test_standalone_context_has_no_trial() -> None:
    ctx = TrialContext({})
    assert not ctx.attached
    assert ctx.params == {} and ctx.max_step is None
    assert ctx.trial_id is None and ctx.attempt_id is None
    assert ctx.should_stop() is False and ctx.should_stop() is False


def test_standalone_reports_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    sent = [(0, {"loss": 2.5}), (1, {"loss": 0.123456789, "acc": 7}), (10, {"x": -1e-7})]
    for step, metrics in sent:
        ctx.report(step, **metrics)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(sent)
    for line, (step, metrics) in zip(lines, sent, strict=True):
        got_step, got = parse_printed(line)
        assert got_step == step and list(got) == list(metrics)
        for key, value in metrics.items():
            assert math.isclose(got[key], value, rel_tol=1e-5)  # printed to 6 digits


def test_standalone_prints_non_finite_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    ctx.report(1, a=math.nan, b=math.inf, c=-math.inf)
    _, got = parse_printed(capsys.readouterr().out.strip())
    assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf


def test_standalone_context_reads_the_trial_json() -> None:
    ctx = TrialContext({ENV_TRIAL: json.dumps(TRIAL)})
    assert not ctx.attached
    assert ctx.params == TRIAL["params"] and ctx.max_step == TRIAL["fidelity_max"]
    assert ctx.trial_id == TRIAL["trial_id"] and ctx.attempt_id == TRIAL["attempt_id"]


def test_an_empty_trial_variable_means_no_trial() -> None:
    ctx = TrialContext({ENV_TRIAL: ""})
    assert ctx.params == {} and ctx.max_step is None


# --- report validation -------------------------------------------------------------------------


@pytest.mark.parametrize("step", [-1, -100, True, False, 1.0, "1", None, 2.5])
def test_bad_steps_are_refused(step: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    with pytest.raises(InvalidInputError) as exc:
        ctx.report(step, loss=1.0)
    assert exc.value.field == "step" and exc.value.value is step
    assert "integer" in exc.value.allowed
    assert capsys.readouterr().out == ""


def test_a_report_needs_a_metric(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    with pytest.raises(InvalidInputError) as exc:
        ctx.report(1)
    assert exc.value.field == "metrics"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value", ["abc", "", None, [1.0], {"a": 1}, True, False, object()])
def test_non_numeric_metrics_are_refused(value: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    with pytest.raises(InvalidInputError) as exc:
        ctx.report(1, loss=0.5, acc=value)
    assert exc.value.field == "metrics.acc" and exc.value.value is value
    assert "number" in exc.value.allowed
    assert capsys.readouterr().out == ""
    ctx.report(1, loss=0.5, acc=0.9)  # a refused report does not use up its step


@pytest.mark.parametrize("value", ["0.5", b"0.5", "nan"], ids=["str", "bytes", "nan-str"])
def test_numeric_strings_are_not_numbers(value: Any) -> None:
    with pytest.raises(InvalidInputError):
        TrialContext({}).report(1, loss=value)


@pytest.mark.parametrize(
    "value", [1, 0.25, np.float32(0.5), np.float64(1.5), np.int64(3)]
)
def test_numeric_metric_types_are_accepted(agent: Agent, value: Any) -> None:
    agent.ctx.report(1, loss=value)
    got = agent.read_report()["metrics"]["loss"]
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("step", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integer_steps_are_the_ints_they_are(agent: Agent, step: Any) -> None:
    # before, refused as "must be an integer": `for step in np.arange(1, 4)` failed the trial
    agent.ctx.report(step, loss=0.5)
    got = agent.read_report()["step"]
    assert type(got) is int and got == 2


def test_steps_must_strictly_increase(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    ctx.report(3, loss=1.0)
    capsys.readouterr()
    for step in (3, 2, 0):
        with pytest.raises(InvalidInputError) as exc:
            ctx.report(step, loss=0.5)
        assert exc.value.field == "step" and exc.value.value == step
        assert "3" in exc.value.allowed  # names the previous step
    assert capsys.readouterr().out == ""
    ctx.report(4, loss=0.5)  # the refusals left the last step at 3
    assert parse_printed(capsys.readouterr().out.strip())[0] == 4


def test_steps_may_skip(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = TrialContext({})
    for step in (0, 5, 100):
        ctx.report(step, loss=1.0)
    steps = [parse_printed(line)[0] for line in capsys.readouterr().out.splitlines()]
    assert steps == [0, 5, 100]


# --- attached to an agent ----------------------------------------------------------------------


def test_attached_context_reads_params_and_max_step(agent: Agent) -> None:
    assert agent.ctx.attached
    assert agent.ctx.params == TRIAL["params"]
    assert agent.ctx.max_step == TRIAL["fidelity_max"]
    assert (agent.ctx.trial_id, agent.ctx.attempt_id) == (TRIAL["trial_id"], TRIAL["attempt_id"])


def test_reports_arrive_as_json_lines(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    sent = [(1, {"val_loss": 0.9, "acc": 1}), (2, {"val_loss": 0.5}), (7, {"val_loss": 0.25})]
    for step, metrics in sent:
        agent.ctx.report(step, **metrics)
    for step, metrics in sent:
        got = agent.read_report()
        assert got == {"type": "report", "step": step,
                       "metrics": {k: float(v) for k, v in metrics.items()}}
        assert all(type(v) is float for v in got["metrics"].values())
    assert agent.nothing_pending()
    assert capsys.readouterr().out == ""  # attached: nothing is printed


def test_refused_reports_send_nothing(agent: Agent) -> None:
    agent.ctx.report(2, loss=1.0)
    assert agent.read_report()["step"] == 2
    refused: list[tuple[int, dict[str, Any]]] = [
        (2, {"loss": 0.1}), (-1, {"loss": 0.1}), (3, {}), (3, {"x": "a"})
    ]
    for step, metrics in refused:
        with pytest.raises(InvalidInputError):
            agent.ctx.report(step, **metrics)
    assert agent.nothing_pending()


def test_non_finite_metrics_reach_the_agent(agent: Agent) -> None:
    agent.ctx.report(1, a=math.nan, b=math.inf)
    metrics = agent.read_report()["metrics"]
    assert math.isnan(metrics["a"]) and metrics["b"] == math.inf


def test_stop_line_makes_should_stop_true(agent: Agent) -> None:
    assert agent.ctx.should_stop() is False
    agent.send(b"stop\n")
    assert agent.ctx.should_stop() is True
    assert agent.ctx.should_stop() is True  # and it stays so


def test_other_control_lines_do_not_stop(agent: Agent) -> None:
    agent.send(b"hello\nstopped\n  \n")
    assert agent.ctx.should_stop() is False
    agent.send(b"noop\nstop\n")
    assert agent.ctx.should_stop() is True


def test_a_stop_line_split_across_writes(agent: Agent) -> None:
    agent.send(b"st")
    assert agent.ctx.should_stop() is False
    agent.send(b"op\n")
    assert agent.ctx.should_stop() is True


def test_closing_the_control_pipe_stops_the_trial(agent: Agent) -> None:
    assert agent.ctx.should_stop() is False
    agent.hang_up_control()
    assert agent.ctx.should_stop() is True


def test_should_stop_does_not_block(agent: Agent) -> None:
    start = time.monotonic()
    for _ in range(100):
        assert agent.ctx.should_stop() is False
    assert time.monotonic() - start < 1.0


def test_a_vanished_agent_stops_the_trial() -> None:
    agent = Agent(control=False)
    try:
        assert agent.ctx.should_stop() is False
        agent.hang_up_reports()
        agent.ctx.report(1, loss=1.0)  # no exception for the training code
        assert agent.ctx.should_stop() is True
        agent.ctx.report(2, loss=1.0)
        assert agent.ctx.should_stop() is True
    finally:
        agent.close()


def test_without_a_control_pipe_should_stop_stays_false() -> None:
    agent = Agent(control=False)
    try:
        agent.ctx.report(1, loss=0.5)
        assert agent.read_report()["step"] == 1
        assert agent.ctx.should_stop() is False
    finally:
        agent.close()


def test_concurrent_reports_stay_ordered(agent: Agent) -> None:
    accepted: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for step in range(offset, 200, 4):
            try:
                agent.ctx.report(step, loss=float(step))
            except InvalidInputError:
                continue
            with lock:
                accepted.append(step)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    received = [agent.read_report()["step"] for _ in accepted]
    assert received == sorted(accepted) and len(set(received)) == len(received)
    assert agent.nothing_pending()


# --- module-level API --------------------------------------------------------------------------


@pytest.fixture
def fresh_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trial, "_context", None)
    monkeypatch.delenv(ENV_REPORT_FD, raising=False)
    monkeypatch.delenv(ENV_CONTROL_FD, raising=False)
    monkeypatch.setenv(ENV_TRIAL, json.dumps(TRIAL))


@pytest.mark.usefixtures("fresh_module")
def test_module_api_uses_the_process_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert trial.params == TRIAL["params"]
    assert trial.max_step == TRIAL["fidelity_max"]
    assert (trial.trial_id, trial.attempt_id) == (TRIAL["trial_id"], TRIAL["attempt_id"])
    assert trial.attached is False  # no report pipe: standalone
    assert trial.context() is trial.context()
    trial.report(1, loss=0.5)
    assert parse_printed(capsys.readouterr().out.strip()) == (1, {"loss": 0.5})
    assert trial.should_stop() is False
    with pytest.raises(InvalidInputError):
        trial.report(1, loss=0.4)  # the module shares one context


def test_module_has_no_other_dynamic_attributes() -> None:
    with pytest.raises(AttributeError):
        trial.no_such_thing  # noqa: B018


@pytest.mark.parametrize(("step", "metrics", "field", "allowed"), [
    (10, {"loss": 0.5}, "step", r"must be at most trial.max_step \(9, the study's fidelity.max\)"),
    (2, {"bad\ud800name": 1.0}, "metrics", "a metric's name must be text that UTF-8 can encode"),
    (2, {f"acc_class_{i}": 0.5 for i in range(5000)}, "metrics",
     r"make a report of [\d,]+ bytes, over the 65,536 one report may take"),
    (2, {"loss": 10**400}, "metrics.loss", "must be a number"),
], ids=["beyond-max-step", "surrogate-name", "too-long", "int-beyond-double"])
def test_a_report_the_agent_could_not_take_is_refused_and_changes_nothing(
    agent: Agent, step: int, metrics: dict[str, Any], field: str, allowed: str
) -> None:
    # before: a step beyond fidelity.max was sent on (and such a trial became the study's
    # best), a surrogate in a name failed the agent three times as its own error, a line over
    # 64 KiB was dropped without a word, and 10**400 raised a raw OverflowError
    agent.ctx.report(1, loss=1.0)
    assert agent.read_report()["step"] == 1
    with pytest.raises(InvalidInputError, match=f"^{field}: got .*; {allowed}"):
        agent.ctx.report(step, **metrics)
    assert agent.nothing_pending()
    agent.ctx.report(2, loss=0.5)  # the next step is still free: nothing changed
    assert agent.read_report()["step"] == 2


def _later(agent: Agent, line: bytes, delay: float = 0.1) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), agent.send(line)))
    thread.start()
    return thread


def test_after_a_report_should_stop_waits_for_its_decision(agent: Agent) -> None:
    # before, it only looked: the stop for a report came a round trip later, so a trial the
    # scheduler stopped at a step trained one more
    agent.ctx.report(1, loss=0.5)
    agent.read_report()
    thread = _later(agent, b"stop\n")
    start = time.monotonic()
    assert agent.ctx.should_stop() is True
    assert 0.05 < time.monotonic() - start < 1.0
    thread.join()


def test_a_report_let_through_ends_the_wait_and_an_older_decision_does_not(
        agent: Agent) -> None:
    agent.ctx.report(1, loss=0.5)
    agent.ctx.report(2, loss=0.4)
    agent.send(b"continue 1\n")  # the decision on the earlier report: still waiting for 2
    thread = _later(agent, b"continue 2\n")
    start = time.monotonic()
    assert agent.ctx.should_stop() is False
    assert 0.05 < time.monotonic() - start < 1.0
    thread.join()
    start = time.monotonic()
    assert agent.ctx.should_stop() is False  # nothing to wait for now
    assert time.monotonic() - start < 0.05


def test_without_a_decision_should_stop_waits_at_most_its_limit(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trial, "DECISION_WAIT_SECONDS", 0.2)
    agent.ctx.report(1, loss=0.5)
    start = time.monotonic()
    assert agent.ctx.should_stop() is False
    assert 0.15 < time.monotonic() - start < 1.0
