"""The agent's attempt handling without a coordinator: every attempt ends with one final event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node_agent.agent import Agent, AgentConfig, RunningAttempt
from node_agent.cli import main
from tunefleet.errors import BundleError
from tunefleet.keys import Identity
from tunefleet.v1 import node_pb2


def make_agent(tmp_path: Path) -> Agent:
    agent = Agent(AgentConfig(coordinator="127.0.0.1:1", home=tmp_path / "home", cpu_slots=1),
                  Identity.generate())
    return agent


def assignment() -> node_pb2.Assignment:
    return node_pb2.Assignment(attempt_id=7, study_id="s", trial_id=0, bundle_digest="ab" * 32,
                               entrypoint="train.py", fidelity_max=3)


@pytest.mark.parametrize("error, kind, outcome", [
    (BundleError("publisher x is not in this node's trust policy"), "declined", None),
    (OSError(28, "No space left on device"), "finished", "failed"),
    (RuntimeError("something unexpected"), "finished", "failed"),
])
def test_every_attempt_ends_with_one_final_event(tmp_path: Path, error: Exception, kind: str,
                                                 outcome: str | None) -> None:
    agent = make_agent(tmp_path)

    async def broken(digest: str, workdir: Path) -> None:
        raise error

    agent.cache.unpack = broken  # type: ignore[method-assign]
    attempt = RunningAttempt(assignment())
    asyncio.run(agent._run_attempt(attempt))
    assert attempt.final is not None and attempt.final.WhichOneof("kind") == kind
    if outcome is not None:
        assert attempt.final.finished.outcome == outcome
        assert str(error.args[-1]) in attempt.final.finished.error
    # Only a refused bundle is "declined" (it bars the node from the study); transient
    # failures are ordinary failures that the coordinator retries.
    assert not (tmp_path / "home" / "work" / "attempt-7").exists()


def test_agent_refuses_to_run_trials_as_its_own_user_without_consent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("node_agent.cli.os.geteuid", lambda: 1000)
    code = main(["start", "--coordinator", "127.0.0.1:1", "--insecure", "--home",
                 str(tmp_path / "h")])
    assert code == 2
    err = capsys.readouterr().err
    assert "could read the node key" in err and "--allow-same-user" in err
    assert not (tmp_path / "h" / "node.key").exists()


def test_bad_limit_flags_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    code = main(["start", "--coordinator", "127.0.0.1:1", "--insecure", "--memory-gb", "-1",
                 "--home", str(tmp_path / "h")])
    assert code == 1
    assert "--memory-gb" in capsys.readouterr().err
