"""ListTrials' pages: every trial once, in order, in replies of bounded size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator import trial_pages
from coordinator.hub import Hub
from coordinator.store import Store
from coordinator.trial_pages import trial_page
from tests.coordinator.test_hub import Clock, connect, finish, make_spec, report, submit
from tunefleet.errors import InvalidInputError, NotFoundError
from tunefleet.v1 import researcher_pb2

TRIALS, STEPS = 7, 30


@pytest.fixture
def study(tmp_path: Path) -> Iterator[tuple[Store, str]]:
    """A finished study of TRIALS trials, each with STEPS reports."""
    store = Store(tmp_path / "c.db")
    hub = Hub(store, clock=Clock(), lease_seconds=10.0, max_attempts=2)
    study_id = submit(hub, make_spec(budget={"max_trials": TRIALS},
                                     fidelity={"min": 1, "max": STEPS}))
    [a] = connect(hub, "n1")
    while True:
        for step in range(1, STEPS + 1):
            report(hub, "n1", a.attempt_id, step, step, a.trial_id + step / 1000)
        following = finish(hub, "n1", a.attempt_id)
        if not following:
            break
        [a] = following
    yield store, study_id
    store.close()


def pages(store: Store, study_id: str, reports: bool, size: int = 0
          ) -> list[researcher_pb2.TrialList]:
    out, token = [], ""
    while True:
        page = trial_page(store, study_id, reports, token, size)
        out.append(page)
        if not page.next_page_token:
            return out
        token = page.next_page_token


def test_pages_of_a_given_size_hold_every_trial_once_in_order(study: tuple[Store, str]
                                                              ) -> None:
    store, study_id = study
    got = pages(store, study_id, reports=True, size=3)
    assert [[t.trial_id for t in p.trials] for p in got] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [p.next_page_token for p in got] == ["3", "6", ""]
    whole = trial_page(store, study_id, True)  # the default size holds them all
    assert not whole.next_page_token
    assert [t for p in got for t in p.trials] == list(whole.trials)
    assert all(len(t.reports) == STEPS for t in whole.trials)


def test_a_trial_too_large_for_one_page_is_split_between_pages(
        study: tuple[Store, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, study_id = study
    whole = trial_page(store, study_id, True)
    one = whole.trials[0].ByteSize()
    monkeypatch.setattr(trial_pages, "PAGE_BYTES", one // 2)  # half a trial per page
    got = pages(store, study_id, reports=True)
    assert all(p.ByteSize() <= one // 2 + 64 for p in got)  # a few bytes of page framing
    assert all(len(p.trials) == 1 for p in got)
    parts = [p.trials[0].trial_id for p in got]
    assert sorted(parts) == parts and all(parts.count(n) >= 2 for n in range(TRIALS))
    ends = [p.next_page_token for p in got]
    inside = zip(ends[:-1], parts[:-1], parts[1:], strict=True)
    assert all("." in t for t, n, m in inside if n == m)  # a page that ends inside a trial
    # joined as the client joins them, the pages give back the whole listing
    joined: list[researcher_pb2.TrialInfo] = []
    for trial in (t for p in got for t in p.trials):
        if joined and joined[-1].trial_id == trial.trial_id:
            joined[-1].reports.extend(trial.reports)
        else:
            joined.append(trial)
    assert joined == list(whole.trials)


def test_without_reports_pages_are_bounded_by_bytes_too(
        study: tuple[Store, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, study_id = study
    whole = trial_page(store, study_id, False)
    bound = 2 * max(t.ByteSize() for t in whole.trials) + 1
    monkeypatch.setattr(trial_pages, "PAGE_BYTES", bound)
    got = pages(store, study_id, reports=False)
    assert len(got) > 1 and all(p.trials for p in got)
    assert all(p.ByteSize() <= bound + 16 for p in got)
    assert [t for p in got for t in p.trials] == list(whole.trials)


@pytest.mark.parametrize("token, size, field", [
    ("abc", 0, "page_token"), ("-1", 0, "page_token"), ("3.", 0, "page_token"),
    ("1" * 19, 0, "page_token"), ("", -1, "page_size"), ("", 1001, "page_size"),
])
def test_a_malformed_token_or_size_is_refused_by_name(study: tuple[Store, str], token: str,
                                                      size: int, field: str) -> None:
    store, study_id = study
    with pytest.raises(InvalidInputError, match=f"^{field}: got"):
        trial_page(store, study_id, False, token, size)


def test_a_token_past_the_end_gives_an_empty_last_page(study: tuple[Store, str]) -> None:
    store, study_id = study
    page = trial_page(store, study_id, True, "99")
    assert list(page.trials) == [] and page.next_page_token == ""
    with pytest.raises(NotFoundError):
        trial_page(store, "nope", False)


def test_a_retried_trial_shows_the_reports_of_its_latest_attempt_only(tmp_path: Path) -> None:
    # before, the reports of a lost attempt and of its retry were joined: steps 1, 2, 1, 2, 3
    store = Store(tmp_path / "c.db")
    hub = Hub(store, clock=Clock(), lease_seconds=10.0, max_attempts=2)
    study_id = submit(hub, make_spec(budget={"max_trials": 1}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.9)
    report(hub, "n1", a.attempt_id, 2, 2, 0.8)
    [b] = connect(hub, "n1")  # the node restarted without it: lost, and leased again
    assert b.trial_id == a.trial_id and b.attempt_id != a.attempt_id
    page = trial_page(store, study_id, True)
    assert [r.step for r in page.trials[0].reports] == [1, 2]  # nothing newer yet
    report(hub, "n1", b.attempt_id, 1, 1, 0.5)
    page = trial_page(store, study_id, True)  # the trial's value is still the first's step 2
    assert (page.trials[0].step, [r.step for r in page.trials[0].reports]) == (2, [1, 2])
    for step in (2, 3):
        report(hub, "n1", b.attempt_id, step, step, 0.5 / step)
    page = trial_page(store, study_id, True)
    assert [(r.step, r.metrics["loss"]) for r in page.trials[0].reports] == [
        (1, 0.5), (2, 0.25), (3, 0.5 / 3)]
    # a page that went on with a split trial keeps to the attempt it started with
    rest = trial_page(store, study_id, True, f"{a.trial_id}.{a.attempt_id}.1")
    assert [(r.step, r.metrics["loss"]) for r in rest.trials[0].reports] == [(2, 0.8)]
    store.close()


def test_a_page_reads_reports_only_as_far_as_its_bytes_go(
        study: tuple[Store, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # before, every page read and decoded the reports of all its page_size trials, however few
    # fitted: reading a study whose trials are large cost the square of its size
    store, study_id = study
    whole = trial_page(store, study_id, True)
    monkeypatch.setattr(trial_pages, "PAGE_BYTES", whole.trials[0].ByteSize() // 3)
    monkeypatch.setattr(trial_pages, "REPORT_ROWS", 4)
    read: list[int] = []
    reports = store.attempt_reports

    def counting(attempt_id: int, offset: int, limit: int, max_step: int
                 ) -> list[dict[str, object]]:
        rows = reports(attempt_id, offset, limit, max_step)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(store, "attempt_reports", counting)
    got = pages(store, study_id, reports=True)
    sent = sum(len(t.reports) for p in got for t in p.trials)
    assert sent == TRIALS * STEPS
    assert sum(read) <= sent + 4 * len(got)  # at most one chunk read beyond what each page sent


def test_an_ended_trials_curve_ends_at_its_step(tmp_path: Path) -> None:
    # before, a report that came after the stop (never counted) went on the curve
    store = Store(tmp_path / "c.db")
    hub = Hub(store, clock=Clock(), lease_seconds=10.0, max_attempts=2)
    study_id = submit(hub, make_spec(budget={"max_trials": 1},
                                     fidelity={"min": 1, "max": 3}))
    [a] = connect(hub, "n1")
    report(hub, "n1", a.attempt_id, 1, 1, 0.9)
    hub.stop_study(study_id, "owner")
    report(hub, "n1", a.attempt_id, 2, 2, 0.8)  # the child's step after the stop
    finish(hub, "n1", a.attempt_id, "stopped")
    [trial] = trial_page(store, study_id, True).trials
    assert (trial.state, trial.step, [r.step for r in trial.reports]) == ("pruned", 1, [1])
    store.close()
