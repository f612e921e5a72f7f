"""The trials of a study as researchers list them, one page per ListTrials call.

A page holds at most ``page_size`` trials and about :data:`PAGE_BYTES` of them, so that a reply
stays well under the clients' 8 MiB receive limit. A call reads the rows of the trials it
returns, and their reports only as far as the page's bytes go (in chunks of
:data:`REPORT_ROWS`), so one call holds the hub's thread for a bounded time however large
the study or a trial is.

A trial's reports are those of one attempt: the latest that reached the trial's step (the one
its value comes from), else the latest that reported. A trial whose reports alone pass the
byte bound is split: the page ends inside its reports, and the next page starts with the same
trial carrying the reports that follow (a client joins the two). A trial that does not fit
beside others starts the next page.

The page token is the number of the next trial, with ``.A.K`` when the first K reports of
attempt A of that trial were already sent.
"""

from __future__ import annotations

import re

from coordinator.store import Store
from coordinator.views import trial_info_to_proto
from tunefleet.errors import InvalidInputError
from tunefleet.v1 import researcher_pb2

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PAGE_BYTES", "trial_page"]

DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000
PAGE_BYTES = 2 * 1024 * 1024
REPORT_ROWS = 4096  # reports read at a time while a page fills
_TOKEN = re.compile(r"(\d{1,18})(?:\.(\d{1,18})\.(\d{1,18}))?", re.ASCII)
_REPORT_OVERHEAD = 6  # a repeated field's tag and length prefix, at most


def _parse_token(token: str) -> tuple[int, int | None, int]:
    """``(trial number, attempt id or None, reports of it already sent)``."""
    if not token:
        return 0, None, 0
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidInputError("page_token", token,
                                "must be empty or the next_page_token of an earlier reply")
    return int(match[1]), None if match[2] is None else int(match[2]), int(match[3] or 0)


def trial_page(store: Store, study_id: str, include_reports: bool, page_token: str = "",
               page_size: int = 0) -> researcher_pb2.TrialList:
    """One page of the study's trials, in number order, from ``page_token`` (empty: the
    first); each with the node and error of its latest attempt, the GPU use its node measured
    (the latest attempt that has it), its verification and, with ``include_reports``, the
    reports of one attempt (see the module's docstring). Raises NotFoundError for an unknown
    study and InvalidInputError, naming the field, for a malformed token or a page size
    outside [0, MAX_PAGE_SIZE]."""
    first, split_attempt, skip = _parse_token(page_token)
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError("page_size", page_size,
                                f"must be in [0, {MAX_PAGE_SIZE}] (0: {DEFAULT_PAGE_SIZE})")
    size = page_size or DEFAULT_PAGE_SIZE
    store.get_study(study_id)
    trials = store.list_trials(study_id, start=first, limit=size + 1)
    following = trials[size] if len(trials) > size else None
    out = researcher_pb2.TrialList()
    used = 0
    for trial in trials[:size]:
        attempts = store.attempts_of_trial(study_id, trial.number)
        node = attempts[-1].node_id if attempts else ""
        info = trial_info_to_proto(trial, node, None,
                                   store.verification_of(trial.study_id, trial.number))
        if not info.error and attempts and attempts[-1].error:
            info.error = attempts[-1].error
        measured = [a for a in attempts if a.gpu_utilization is not None]
        if measured:
            info.gpu_utilization = measured[-1].gpu_utilization or 0.0
            info.gpu_memory_peak_gb = measured[-1].gpu_memory_peak_gb or 0.0
        shown, done = None, 0
        if include_reports:
            if trial.number == first and split_attempt is not None:
                shown, done = split_attempt, skip  # the rest of a split trial
            else:
                shown = store.shown_attempt(study_id, trial.number, trial.step or 0)
        budget = PAGE_BYTES - used - info.ByteSize()
        more = False
        if shown is not None:
            # an ended trial's curve ends at its step: what came after a stop never counted
            last = trial.step if trial.state.finished and trial.step is not None else 2**62
            more = _add_reports(store, info, shown, done, budget, last, alone=not out.trials)
        if out.trials and (more or budget < 0):  # it starts the next page instead
            out.next_page_token = str(trial.number)
            return out
        out.trials.append(info)
        if more:  # alone and still too large: the next page goes on with its reports
            out.next_page_token = f"{trial.number}.{shown}.{done + len(info.reports)}"
            return out
        used += info.ByteSize()
    if following is not None:
        out.next_page_token = str(following.number)
    return out


def _add_reports(store: Store, info: researcher_pb2.TrialInfo, attempt_id: int, offset: int,
                 budget: int, max_step: int, alone: bool) -> bool:
    """Add attempt ``attempt_id``'s reports up to ``max_step``, from the ``offset``-th, to
    ``info`` while they fit in ``budget`` bytes (``alone``: at least one, so that every page
    moves on); return whether some are left."""
    sent = 0
    while True:
        rows = store.attempt_reports(attempt_id, offset + sent, REPORT_ROWS, max_step)
        for row in rows:
            point = info.reports.add(step=int(row["step"]))
            point.metrics.update(row["metrics"])
            budget -= point.ByteSize() + _REPORT_OVERHEAD
            if budget < 0 and (sent > 0 or not alone):
                del info.reports[-1]
                return True
            sent += 1
        if len(rows) < REPORT_ROWS:
            return False
