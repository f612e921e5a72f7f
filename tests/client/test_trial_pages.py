"""The SDK reads ListTrials page by page and joins a trial split between two pages."""

from __future__ import annotations

import pytest

from client.sdk import Client
from tunefleet.errors import TunefleetError
from tunefleet.keys import Identity
from tunefleet.tls import ChannelSecurity
from tunefleet.v1 import researcher_pb2


def _trial(number: int, state: str, steps: list[int]) -> researcher_pb2.TrialInfo:
    info = researcher_pb2.TrialInfo(trial_id=number, state=state, step=max(steps, default=0))
    for step in steps:
        info.reports.add(step=step).metrics["loss"] = step / 10
    return info


class Stub:
    """The coordinator's replies: fixed pages, each keyed by the token that asks for it."""

    def __init__(self, pages: dict[str, tuple[list[researcher_pb2.TrialInfo], str]]) -> None:
        self.pages = pages
        self.asked: list[tuple[str, int]] = []

    def GetStudy(self, request: object, **kwargs: object) -> researcher_pb2.StudyInfo:
        return researcher_pb2.StudyInfo(study_id="s1", state="running")

    def ListTrials(self, request: researcher_pb2.ListTrialsRequest, **kwargs: object
                   ) -> researcher_pb2.TrialList:
        self.asked.append((request.page_token, request.page_size))
        trials, following = self.pages[request.page_token]
        return researcher_pb2.TrialList(trials=trials, next_page_token=following)


def _client(stub: Stub) -> Client:
    client = Client("127.0.0.1:1", Identity.generate(), ChannelSecurity(insecure=True))
    client._stub = stub  # type: ignore[assignment]
    return client


def test_pages_are_read_until_the_last_and_a_split_trial_is_joined() -> None:
    stub = Stub({
        "": ([_trial(0, "running", [1, 2])], "0.2"),
        # the rest of trial 0, read a moment later: it has finished since
        "0.2": ([_trial(0, "completed", [3]), _trial(1, "pruned", [1])], "2"),
        "2": ([_trial(2, "completed", [1, 2, 3])], ""),
    })
    with _client(stub) as client:
        trials = client.trials("s1", include_reports=True, page_size=7)
    assert stub.asked == [("", 7), ("0.2", 7), ("2", 7)]
    assert [t.trial_id for t in trials] == [0, 1, 2]
    assert [r["step"] for r in trials[0].reports] == [1, 2, 3]
    assert trials[0].state == "completed" and trials[0].step == 3  # the later part is newer
    assert [r["step"] for r in trials[2].reports] == [1, 2, 3]


def test_a_coordinator_that_repeats_a_page_token_is_an_error_not_a_loop() -> None:
    stub = Stub({"": ([_trial(0, "completed", [1])], "1"),
                 "1": ([_trial(1, "completed", [1])], "1")})
    with _client(stub) as client, pytest.raises(TunefleetError, match="repeated the page token"):
        client.trials("s1")
    assert len(stub.asked) == 2
