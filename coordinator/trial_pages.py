"""The trials of a study as researchers list them, one page per ListTrials call.

A page holds at most ``page_size`` trials and about :data:`PAGE_BYTES` of them, so that a reply
stays well under the clients' 8 MiB receive limit and one call holds the hub's thread for a
bounded time however large the study is. A trial whose reports alone pass the byte bound is
split: the page ends inside its reports, and the next page starts with the same trial carrying
the reports that follow (a client joins the two).

The page token is the number of the next trial, with ``.K`` when the first K reports of that
trial were already sent.
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
_TOKEN = re.compile(r"(\d{1,18})(?:\.(\d{1,18}))?")
_REPORT_OVERHEAD = 6  # a repeated field's tag and length prefix, at most


def _parse_token(token: str) -> tuple[int, int]:
    if not token:
        return 0, 0
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidInputError("page_token", token,
                                "must be empty or the next_page_token of an earlier reply")
    return int(match[1]), int(match[2] or 0)


def trial_page(store: Store, study_id: str, include_reports: bool, page_token: str = "",
               page_size: int = 0) -> researcher_pb2.TrialList:
    """One page of the study's trials, in number order, from ``page_token`` (empty: the
    first); each with the node and error of its latest attempt, the GPU use its node measured
    (the latest attempt that has it), its verification and, with ``include_reports``, the
    reports of its latest attempt that reported. Raises NotFoundError for an unknown study
    and InvalidInputError, naming the field, for a malformed token or a page size outside
    [0, MAX_PAGE_SIZE]."""
    first, skip = _parse_token(page_token)
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError("page_size", page_size,
                                f"must be in [0, {MAX_PAGE_SIZE}] (0: {DEFAULT_PAGE_SIZE})")
    size = page_size or DEFAULT_PAGE_SIZE
    store.get_study(study_id)
    trials = store.list_trials(study_id, start=first, limit=size + 1)
    following = trials[size] if len(trials) > size else None
    trials = trials[:size]
    by_trial: dict[int, list[dict[str, object]]] = {}
    if include_reports and trials:
        for r in store.reports_of_study(study_id, trials[0].number, trials[-1].number):
            shown = by_trial.setdefault(int(r["trial_number"]), [])
            if shown and shown[-1]["attempt_id"] != r["attempt_id"]:
                shown.clear()  # a later attempt: one curve, not two joined at a restart
            shown.append(r)
    out = researcher_pb2.TrialList()
    used = 0
    for trial in trials:
        done = skip if trial.number == first else 0  # reports of it sent by earlier pages
        attempts = store.attempts_of_trial(study_id, trial.number)
        node = attempts[-1].node_id if attempts else ""
        info = trial_info_to_proto(trial, node, by_trial.get(trial.number, [])[done:],
                                   store.verification_of(trial.study_id, trial.number))
        if not info.error and attempts and attempts[-1].error:
            info.error = attempts[-1].error
        measured = [a for a in attempts if a.gpu_utilization is not None]
        if measured:
            info.gpu_utilization = measured[-1].gpu_utilization or 0.0
            info.gpu_memory_peak_gb = measured[-1].gpu_memory_peak_gb or 0.0
        nbytes = info.ByteSize()
        if out.trials and used + nbytes > PAGE_BYTES:
            out.next_page_token = str(trial.number)
            return out
        if nbytes > PAGE_BYTES:  # alone too large: as many of its reports as fit, at least one
            kept = _reports_that_fit(info)
            del info.reports[kept:]
            out.trials.append(info)
            out.next_page_token = f"{trial.number}.{done + kept}"
            return out
        out.trials.append(info)
        used += nbytes
    if following is not None:
        out.next_page_token = str(following.number)
    return out


def _reports_that_fit(info: researcher_pb2.TrialInfo) -> int:
    """How many of ``info``'s first reports fit in a page with the rest of it (at least 1)."""
    budget = PAGE_BYTES - (info.ByteSize() - sum(r.ByteSize() + _REPORT_OVERHEAD
                                                 for r in info.reports))
    kept = 0
    for report in info.reports:
        budget -= report.ByteSize() + _REPORT_OVERHEAD
        if budget < 0:
            break
        kept += 1
    return max(kept, 1)
