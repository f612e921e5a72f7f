"""The researcher's command line: ``tunefleet``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import grpc

from client.config import key_path, researcher_identity
from client.importance import Importance, study_importance
from client.local import AgentWatch, LocalCluster
from client.report import best_pruned, write_report, write_trials_csv
from client.results import StudyStatus, TrialResult
from client.sdk import Client, CoordinatorError, build_bundle, check_submittable
from tunefleet import serde
from tunefleet.bundle import RESULTS_MARKER, file_digests
from tunefleet.connection import add_connection_args, connection_from
from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.keys import Identity, load, load_or_create
from tunefleet.search_limits import grid_size
from tunefleet.space import CategoricalParam, IntParam
from tunefleet.study import StudySpec, deadline_text, load_study_file
from tunefleet.trial import ENV_TRIAL
from tunefleet.v1 import common_pb2
from tunefleet.writable import unwritable_folder

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunefleet",
        description="Tune hyperparameters on a pool of GPU machines. Write train.py and "
        "study.toml (`tunefleet init`), try it (`tunefleet try`), run it locally "
        "(`tunefleet run --local 2`) or on a coordinator (`tunefleet submit`).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    with_coordinator = add_connection_args

    p = sub.add_parser("keygen", help="create your researcher signing key")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p = sub.add_parser("init", help="write the digits MLP template study into DIR")
    p.add_argument("dir", type=Path, help="a new or empty directory")
    p = sub.add_parser("submit", help="validate, sign, upload and submit a study; prints its id")
    p.add_argument("study", type=Path, help="the study file (study.toml)")
    with_coordinator(p)
    for name, text in (("status", "a study's state and trial counts"),
                       ("watch", "follow a study live until it ends (through coordinator restarts)"),
                       ("stop", "stop a study: no new trials, running ones end")):
        p = sub.add_parser(name, help=text)
        p.add_argument("study_id")
        with_coordinator(p)
    p = sub.add_parser("best", help="the best trial of a study")
    p.add_argument("study_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    with_coordinator(p)
    p = sub.add_parser("trials", help="every trial of a study")
    p.add_argument("study_id")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="a table to read (default), CSV with one row per trial, or JSON")
    p.add_argument("--reports", action="store_true", help="with --format json: every report")
    with_coordinator(p)
    p = sub.add_parser(
        "importance", help="which parameters mattered: permutation importances from random "
        "forests, read at the highest step most trials reached",
    )
    p.add_argument("study_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    with_coordinator(p)
    p = sub.add_parser("studies", help="your studies on the coordinator (the operator's key: all)")
    with_coordinator(p)
    p = sub.add_parser(
        "run", help="run a study to the end on an embedded coordinator with local agents"
    )
    p.add_argument("study", type=Path, help="the study file (study.toml)")
    p.add_argument("--local", type=int, required=True, metavar="N",
                   help="number of local node agents (one trial each at a time)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="keep the coordinator database and logs here (default: a temp dir, "
                   "removed at the end); run the same command again to resume an interrupted "
                   "study")
    p.add_argument("--json", action="store_true",
                   help="print the best trial as JSON, alone on stdout (progress goes to stderr)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the results here: best.json, trials.csv, learning curves and "
                   "plots (default: results/STUDY_ID beside the study file)")
    p.add_argument("--no-report", action="store_true", help="write no result files")
    p = sub.add_parser(
        "report", help="write a study's results into a directory: best.json, trials.csv, "
        "learning_curves.png, history.png, parameters.png",
    )
    p.add_argument("study_id")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the directory (default: results/STUDY_ID)")
    with_coordinator(p)
    p = sub.add_parser("try", help="run a training script once, standalone, printing its reports")
    p.add_argument("script", type=Path, help="the training script (train.py)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter value (repeatable); others come from study.toml beside "
                   "the script (the middle of each range, the first choice)")
    p.add_argument("--study", type=Path, default=None,
                   help="study file for the space (default: study.toml beside the script)")
    return parser


def _client(args: argparse.Namespace, sign: bool = False) -> Client:
    """A client; with ``sign`` it carries the researcher key, created on first use."""
    address, security = connection_from(args)
    identity = None
    if sign:
        identity, created = researcher_identity()
        if created:
            print(f"created researcher key {key_path()}", file=sys.stderr)
    elif key_path().exists():
        identity = load(key_path())
    return Client(address, identity, security)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


def _progress_line(status: StudyStatus, started: float, total: int | None = None) -> str:
    """One line of progress; ``total``: the trials the study will run, when its budget does
    not say (a grid's points)."""
    c = status.counts
    done = c["completed"] + c["pruned"] + c["failed"]
    if status.max_trials is not None:  # a grid smaller than the budget ends sooner
        total = status.max_trials if total is None else min(total, status.max_trials)
    shown_total = "?" if total is None else total
    best = "-"
    if status.best is not None:
        best = f"{status.metric}={_fmt(status.best.value)} (trial {status.best.trial_id})"
    return (f"[{time.monotonic() - started:6.1f}s] {status.state:<9} done {done}/{shown_total}  "
            f"running {c['running']}  pruned {c['pruned']}  failed {c['failed']}  best {best}"
            + (f"  ({status.end_reason})" if status.end_reason else "")
            + (f"  (waiting: {status.waiting_for})" if status.waiting_for else ""))


def _report(status: StudyStatus, trials: list[TrialResult], out: Path,
            info: TextIO | None = None) -> None:
    """Write the result files; say where on ``info`` (default stdout)."""
    try:
        written = write_report(status, trials, out)
    except (OSError, ValueError, OverflowError) as exc:
        raise TunefleetError(f"could not write the results to {out}: {exc}") from None
    print(f"results in {out}: {', '.join(p.name for p in written)}", file=info or sys.stdout)


def _results_dir(parent: Path, study_id: str) -> Path:
    """``PARENT/results/STUDY_ID``, its ``results`` folder made and marked so that bundles
    leave it out (it may be in a study's folder)."""
    results = parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / RESULTS_MARKER).write_text(
        "tunefleet writes study results here; bundles leave this folder out\n")
    return results / _safe_name(study_id)


def _safe_name(study_id: str) -> str:
    """A study id as one path component, whatever a coordinator sent."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", study_id) or "study"


def _budget_text(spec: StudySpec) -> str:
    """What bounds a study, in words: "16 trials, 1.5 GPU-hours, until 2026-12-01T18:00:00Z"."""
    b = spec.budget
    parts = [f"{b.max_trials} trials"] if b.max_trials is not None else []
    if b.max_gpu_hours is not None:
        parts.append(f"{b.max_gpu_hours:g} GPU-hours")
    if b.max_credits is not None:
        parts.append(f"{b.max_credits:g} credits")
    if b.deadline is not None:
        parts.append(f"until {deadline_text(b.deadline)}")
    return ", ".join(parts) or "the whole grid"


RECONNECT_SECONDS = 600.0  # how long `tunefleet watch` waits for a coordinator to come back
# what a call gets from a coordinator that is away: down, or shutting down under the call
GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def _watch(client: Client, study_id: str, info: TextIO | None = None,
           total: int | None = None, reconnect_for: float = 0.0) -> StudyStatus:
    """Print a progress line on ``info`` (default stdout) at every change; the last status.
    With ``reconnect_for``, a coordinator that goes away (a restart) is waited for, trying
    again with growing pauses, for up to that many seconds each time; the study goes on there."""
    out = info or sys.stdout
    started = time.monotonic()
    last: StudyStatus | None = None
    while True:
        try:
            for status in client.watch(study_id):
                print(_progress_line(status, started, total), file=out, flush=True)
                last = status
            return last if last is not None else client.status(study_id)
        except CoordinatorError as exc:
            if not reconnect_for or exc.code not in GONE:
                raise
            print(f"lost the coordinator ({exc.details or exc}); trying again for up to "
                  f"{reconnect_for:.0f} s", file=sys.stderr, flush=True)
            _wait_for_coordinator(client, study_id, reconnect_for)
            print("reconnected", file=sys.stderr, flush=True)


def _wait_for_coordinator(client: Client, study_id: str, seconds: float) -> None:
    """Return once the coordinator answers for the study; re-raise its last error after
    ``seconds``."""
    deadline, pause = time.monotonic() + seconds, 0.5
    while True:
        try:
            client.status(study_id)
            return
        except CoordinatorError as exc:
            if exc.code not in GONE or time.monotonic() >= deadline:
                raise
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 10.0)


def _settled(client: Client, status: StudyStatus, timeout: float = 60.0) -> StudyStatus:
    """``status`` once no trial of the study runs any more, or after ``timeout`` seconds: a
    stop ends a study before its running trials have stopped (and become pruned)."""
    deadline = time.monotonic() + timeout
    while status.counts["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.status(status.study_id)
    return status


def _unreported_objective(metric: str, trials: Sequence[TrialResult]) -> list[str]:
    """The metric names the trials' reports hold when none of them holds ``metric`` (a
    misspelled objective, say); [] when one does, or when there are no reports to tell."""
    names = {k for t in trials for r in t.reports for k in r if k != "step"}
    return [] if metric in names else sorted(names)


def _print_best(status: StudyStatus, as_json: bool,
                trials: Sequence[TrialResult] = ()) -> int:
    """Print the best trial (JSON with ``as_json``), or why there is none: on stdout, or on
    stderr with ``as_json`` so that stdout holds JSON only. ``trials`` with their reports let
    the why name a best trial stopped early and an objective metric no trial reported."""
    if as_json:
        print(json.dumps(None if status.best is None else {
            "study_id": status.study_id, "metric": status.metric, "mode": status.mode,
            **status.best.to_dict()}, indent=2))
        if status.best is None and status.finished:
            _print_no_best(status, trials, sys.stderr)
        return 0 if status.best is not None else 1
    if status.best is None:
        if not status.finished:
            print(f"study {status.study_id} has no completed trial with a value yet")
            return 1
        _print_no_best(status, trials, sys.stdout)
        return 1
    b = status.best
    print(f"best trial {b.trial_id}: {status.metric}={_fmt(b.value)} at step {b.step}")
    mark = {"verified": "verified", "disputed": "DISPUTED", "pending": "verification pending",
            "unverifiable": "not verified", "none": "not verified"}[b.verification]
    print(f"  {mark}" + (f" ({b.verification_detail})" if b.verification_detail else ""))
    for name, value in b.params.items():  # as TOML writes them: paste into enqueue
        shown = repr(value) if isinstance(value, float) else json.dumps(value)  # every digit
        print(f"  {name} = {shown}")
    return 0


def _print_no_best(status: StudyStatus, trials: Sequence[TrialResult], out: TextIO) -> None:
    why = f" ({status.end_reason})" if status.end_reason else ""
    print(f"study {status.study_id} ended{why} with no trial run to the end", file=out)
    pruned = best_pruned(status, trials)
    if pruned is not None:
        print(f"  the best stopped early: trial {pruned.trial_id}, "
              f"{status.metric}={_fmt(pruned.value)} at step {pruned.step}", file=out)
    reported = _unreported_objective(status.metric, trials)
    if reported:
        print(f"  no trial reported the objective metric {status.metric!r} (reported: "
              f"{', '.join(reported)}); [objective] metric must be a name the training code "
              "passes to trial.report", file=out)


def _print_trials(trials: list[TrialResult], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([t.to_dict() for t in trials], indent=2, allow_nan=False))
        return
    if fmt == "csv":
        write_trials_csv(trials, sys.stdout)
        return
    gpu = any(t.gpu_utilization is not None for t in trials)  # a column only where measured
    print(f"{'id':>4}  {'state':<10}{'value':>12}{'step':>6}{'att':>5}"
          f"{'  gpu%    GiB' if gpu else ''}  params")
    for t in trials:
        used = ""
        if gpu:
            used = (f"{t.gpu_utilization:6.0f} {t.gpu_memory_peak_gb or 0.0:6.1f}"
                    if t.gpu_utilization is not None else f"{'-':>6} {'-':>6}")
        print(f"{t.trial_id:>4}  {t.state:<10}{_fmt(t.value):>12}{t.step:>6}{t.attempts:>5}"
              f"{used}  {_params_text(t.params)}")
        if t.error:
            for line in t.error.strip().splitlines()[-5:]:
                print(f"{'':>6}! {line}")


def _print_importance(found: Importance, as_json: bool) -> None:
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    print(f"importance for {found.metric} at step {found.step} ({found.trials} trials); the "
          f"parameters explain {max(found.r2, 0.0):.0%} of its variation (cross-validated)")
    width = max(len(name) for name in found.by_param)
    for name, share in found.by_param.items():
        print(f"  {name:<{width}}  {share:5.2f}  {'#' * round(share * 40)}")
    if found.r2 < 0.1:
        print(f"  (R^2 {found.r2:.2f}: the parameters explain little of {found.metric} here, so "
              "these shares are mostly noise; more trials would tell)")


def _init(target: Path) -> None:
    """Write the template into ``target``, a new or empty directory: the study's bundle is the
    whole directory, so anything already there would be shipped with every trial."""
    files = ("study.toml", "train.py")
    for name in files:
        if (target / name).exists():
            raise TunefleetError(f"{target / name} already exists; choose an empty directory")
    if target.exists() and not target.is_dir():
        raise TunefleetError(f"{target} is a file; init writes into a new or empty directory")
    present = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if present:
        raise TunefleetError(
            f"{target} is not empty ({len(present)} "
            f"{'entry' if len(present) == 1 else 'entries'}, such as {present[0]!r}); init "
            "writes into a new or empty directory, as the study's bundle is the whole directory")
    why = unwritable_folder(target)
    if why is not None:
        raise InvalidInputError("DIR", str(target), f"must be a folder this user can write to or "
                                f"create (it {why})")
    target.mkdir(parents=True, exist_ok=True)
    template = resources.files("client.templates.digits")
    for name in files:
        (target / name).write_text(template.joinpath(name).read_text())
    print(f"wrote {target}/study.toml and {target}/train.py")
    print(f"next: tunefleet try {target}/train.py   then: tunefleet run {target}/study.toml --local 2")


def _run_local(args: argparse.Namespace) -> int:
    spec = load_study_file(args.study)
    bundle_dir = (args.study.parent / spec.bundle).resolve()
    if args.local < 1:
        raise InvalidInputError("--local", args.local, "must be at least 1 agent")
    check_submittable(spec, bundle_dir)  # before a key, a cluster or a state directory
    for flag, folder in (("--state-dir", args.state_dir),
                         ("--out", None if args.no_report else args.out)):
        why = None if folder is None else unwritable_folder(folder)
        if why is not None:  # said now, not after the study has run
            raise InvalidInputError(flag, str(folder), f"must be a folder this user can write "
                                    f"to or create (it {why})")
    identity, _ = researcher_identity()
    info = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON only
    print(f"starting an embedded coordinator and {args.local} local agent(s)", file=info,
          flush=True)
    with LocalCluster(args.local, state_dir=args.state_dir, researchers=[identity.key_id],
                      gpus_per_trial=max(1, spec.resources.gpus)) as cluster:
        need = spec.resources
        if need.gpus:
            cluster.wait_for_nodes(args.local)
            have = cluster.largest_gpu_slot(need.min_gpu_memory_gb)
            if have < need.gpus:
                cpu = ("set gpus = 0 to run trials on CPU slots" if spec.budget.max_gpu_hours is
                       None else "set gpus = 0 and bound the study by max_trials, max_credits "
                       "or deadline instead of max_gpu_hours to run trials on CPU slots")
                raise InvalidInputError(
                    "resources.gpus", need.gpus,
                    f"the most GPU(s) with >= {need.min_gpu_memory_gb:g} GB that one local "
                    f"agent holds is {have} (the machine's GPUs are dealt out among the "
                    f"{args.local} agents); {cpu}",
                )
        with Client(cluster.address, identity, cluster.security) as client, \
                AgentWatch(cluster, client.close) as agents:
            try:
                status = _resume_or_submit(client, identity, spec, bundle_dir, info,
                                           cluster.state_dir / SUBMITTED_FILES)
                grid = (grid_size(spec.space) if spec.search.searcher == "grid" else None)
                final = _settled(client, _watch(client, status.study_id, info, grid))
                trials = client.trials(status.study_id, include_reports=True)
            except (CoordinatorError, ValueError):  # ValueError: a call on the closed channel
                if agents.dead:  # the watch closed the connection: say why
                    raise TunefleetError(
                        "every local agent exited, so the study cannot go on ("
                        + "; ".join(agents.dead) + ")" + _state_hint(args)) from None
                raise
            except KeyboardInterrupt:
                for sig in (signal.SIGTERM, signal.SIGHUP):  # let the cleanup below finish
                    signal.signal(sig, signal.SIG_IGN)
                print(f"tunefleet: interrupted{_state_hint(args)}", file=sys.stderr)
                return 130
            failed = [t for t in trials if t.state == "failed"]
        if args.state_dir is not None:
            print(f"state kept in {args.state_dir}", file=info)
        print(f"cost: {final.cost_text()} (attempts from lease to end)", file=info)
        if not args.no_report:
            out = args.out
            try:
                if out is None:  # beside the study file
                    out = _results_dir(args.study.parent, final.study_id)
                _report(final, trials, out, info)
            except TunefleetError as exc:  # the result still gets printed below
                print(f"tunefleet: warning: {exc}", file=sys.stderr)
            except OSError as exc:
                print(f"tunefleet: warning: could not write the results to {out}: {exc}",
                      file=sys.stderr)
    for t in failed[:3]:
        last = t.error.strip().splitlines()[-1:] or ["no error text"]
        print(f"trial {t.trial_id} failed: {last[0]}", file=sys.stderr)
    silent = [t.trial_id for t in trials if t.state == "completed" and t.value is None]
    if silent and final.best is not None:  # without a best, _print_best says why
        print(f"{len(silent)} completed trial(s) never reported {final.metric} (trial "
              f"{', '.join(map(str, silent[:5]))}{'...' if len(silent) > 5 else ''}): they "
              "have no value and cannot be the best", file=sys.stderr)
    top = spec.fidelity.max
    short = sorted({t.step for t in trials if t.state == "completed" and t.step < top})
    if short and spec.search.scheduler != "fifo":
        print(f"{sum(t.state == 'completed' and t.step < top for t in trials)} completed "
              f"trial(s) last reported before fidelity.max ({top}), at step(s) "
              f"{', '.join(map(str, short[:5]))}: {spec.search.scheduler} takes only results "
              f"at step {top} as full ones, so have the training code report at step "
              "trial.max_step", file=sys.stderr)
    return _print_best(final, args.json, trials)


@contextlib.contextmanager
def _interrupted_by_term_and_hangup() -> Iterator[None]:
    """While entered, SIGTERM and SIGHUP (a `timeout`, a closed terminal) raise
    KeyboardInterrupt as Ctrl-C does, so that the local cluster is stopped and its
    temporary state removed; the earlier handlers come back on exit."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _state_hint(args: argparse.Namespace) -> str:
    """Where an interrupted run's state is, and how to go on with it."""
    if args.state_dir is None:
        return ("; its state was in a temporary directory and is gone (with --state-dir DIR "
                "it is kept, and the same command resumes the study)")
    return f"; the state is kept in {args.state_dir}: the same command resumes the study"


SUBMITTED_FILES = "submitted-files.json"  # in a run's state directory: each study's files


def _resume_or_submit(client: Client, identity: Identity, spec: StudySpec, bundle_dir: Path,
                      info: TextIO, record: Path) -> StudyStatus:
    """Submit the study, or follow the same study (same spec, same bundle) that an earlier,
    interrupted run on this state directory left running. Other studies an earlier run left
    running would take the agents from this one: they are stopped, and said so, naming what
    changed (``record`` keeps the digest of each file a submitted study's bundle packed)."""
    bundle = build_bundle(spec, bundle_dir, identity)
    wanted = serde.spec_to_proto(spec, bundle.digest)
    running = [s for s in client.studies() if not s.finished]
    resumed = next((s for s in running if client.study_spec(s.study_id) == wanted), None)
    try:
        submitted: dict[str, dict[str, str]] = json.loads(record.read_text())
    except (OSError, ValueError):
        submitted = {}
    files = file_digests(bundle_dir)
    for s in running:
        if s is not resumed:
            client.stop(s.study_id)
            print(f"stopped study {s.study_id} ({s.name}), left running by an earlier run: "
                  + _what_changed(client.study_spec(s.study_id), wanted,
                                  submitted.get(s.study_id), files), file=info, flush=True)
    if resumed is not None:
        print(f"study {resumed.study_id} ({spec.name}): resuming it where an earlier run left "
              f"it ({_budget_text(spec)})", file=info, flush=True)
        return resumed
    client.upload(bundle)
    status = client.submit_spec(wanted)
    submitted[status.study_id] = files
    with contextlib.suppress(OSError):  # without it, a resume only names less
        record.write_text(json.dumps(submitted))
    print(f"study {status.study_id} ({spec.name}): {spec.search.searcher} + "
          f"{spec.search.scheduler}, {_budget_text(spec)}", file=info, flush=True)
    return status


def _what_changed(old: common_pb2.StudySpec, new: common_pb2.StudySpec,
                  old_files: dict[str, str] | None, files: dict[str, str]) -> str:
    """Why a study left running is not this one: its study file, or the files its bundle
    packed (named, where the earlier run recorded them)."""
    old_spec, new_spec = common_pb2.StudySpec(), common_pb2.StudySpec()
    old_spec.CopyFrom(old)
    new_spec.CopyFrom(new)
    old_spec.bundle_digest = new_spec.bundle_digest = ""
    if old_spec != new_spec:
        return "its study file has changed since"
    changed = sorted(name for name in (old_files or {}).keys() | files.keys()
                     if old_files is not None and old_files.get(name) != files.get(name))
    if not changed:  # not recorded, or the same contents (a file's mode, the signing key)
        return "its code has changed since"
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return (f"files in its folder have changed since ({shown}); every file there is part of "
            "the study's code, so keep a run's logs and outputs outside it (or under runs/, "
            "which is left out)")


def _coerce(name: str, text: str, spec: StudySpec | None) -> Any:
    param = spec.space.get(name) if spec is not None else None
    if isinstance(param, CategoricalParam):
        # the choice written exactly ("Adam" and "adam" may be two), else the one that differs
        # only in case ("true" is True)
        exact = [c for c in param.choices if str(c) == text]
        if len(exact) > 1:  # 1 and "1": what was typed is text
            exact = [c for c in exact if isinstance(c, str)]
        found = exact or [c for c in param.choices if str(c).lower() == text.lower()]
        if len(found) == 1:
            return found[0]
        raise InvalidInputError(f"--param {name}", text, f"must be one of {list(param.choices)}"
                                + (", written exactly: several differ only in case"
                                   if found else ""))
    # a float parameter's value is read as a float directly: an integer too big for a float
    # then reads as inf, which the space refuses by name, instead of overflowing
    casts = (int, float) if param is None or isinstance(param, IntParam) else (float,)
    for cast in casts:
        try:
            return cast(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def _default_params(spec: StudySpec) -> dict[str, Any]:
    """What `tunefleet try` runs a parameter at unless --param gives it: the middle of a
    range (log-middle for a log range), the first choice of a categorical."""
    return {name: p.choices[0] if isinstance(p, CategoricalParam) else p.from_unit(0.5)
            for name, p in spec.space.items()}


def _try(args: argparse.Namespace) -> int:
    script: Path = args.script
    if not script.is_file():
        raise InvalidInputError("script", str(script), "must be an existing file")
    if script.suffix == ".toml":
        raise InvalidInputError("script", str(script), "must be the training script (for "
                                "example train.py); the study.toml beside it is read on its own")
    spec: StudySpec | None
    if args.study is not None:  # named: it must be there
        spec = load_study_file(args.study)
    else:  # the one beside the script is optional
        beside = script.parent / "study.toml"
        spec = load_study_file(beside) if beside.is_file() else None
    params = _default_params(spec) if spec is not None else {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise InvalidInputError("--param", item, "must look like NAME=VALUE")
        if spec is not None and name not in spec.space:
            raise InvalidInputError(f"--param {name}", text,
                                    f"is not a parameter of the study; known: {list(spec.space)}")
        params[name] = _coerce(name, text, spec)
    if spec is not None:
        spec.space.validate_config(params, field="--param")
        # in each parameter's own type, as the coordinator sends them: 64.0 is the int 64
        params = {name: spec.space[name].normalize(v) for name, v in params.items()}
    fidelity = spec.fidelity.max if spec is not None else None
    print(f"trying {script} with {_params_text(params)}", flush=True)
    env = {**os.environ, ENV_TRIAL: json.dumps({"params": params, "fidelity_max": fidelity})}
    return subprocess.call([sys.executable, script.name], cwd=script.parent.resolve(), env=env)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            path = key_path()
            if path.exists() and args.force:  # the only key that reads its studies: kept
                kept = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(path, kept)
                print(f"kept the replaced key as {kept}: studies submitted with it are read "
                      "and stopped only with it (copy it back to use them)", file=sys.stderr)
            identity, created = load_or_create(path)
            print(f"{'created' if created else 'existing'} key {path}")
            print(f"key id {identity.key_id}")
        elif args.command == "init":
            _init(args.dir)
        elif args.command == "submit":
            spec = load_study_file(args.study)  # validate before touching keys or the network
            check_submittable(spec, (args.study.parent / spec.bundle).resolve())
            with _client(args, sign=True) as client:
                study_id = client.submit(spec, (args.study.parent / spec.bundle).resolve()).study_id
                print(f"submitted study {args.study} to {args.coordinator}")
                print(study_id)
        elif args.command == "status":
            with _client(args) as client:
                s = client.status(args.study_id)
            c = s.counts
            print(f"study {s.study_id} ({s.name}): {s.state}"
                  + (f" ({s.end_reason})" if s.end_reason else ""))
            print(f"  trials: {c['completed']} completed, {c['pruned']} pruned, "
                  f"{c['failed']} failed, {c['running']} running, {c['pending']} pending"
                  + (f" of {s.max_trials}" if s.max_trials else ""))
            if s.best is not None:
                print(f"  best: trial {s.best.trial_id} {s.metric}={_fmt(s.best.value)}")
            if s.waiting_for:
                print(f"  waiting: {s.waiting_for}")
            print(f"  cost: {s.cost_text()} (attempts from lease to end)")
        elif args.command == "watch":
            with _client(args) as client:
                final = _watch(client, args.study_id, reconnect_for=RECONNECT_SECONDS)
                # no best: the trials' reports tell why (a best stopped early, a wrong metric)
                trials = (client.trials(args.study_id, True)
                          if final.best is None and final.finished else [])
            if final.best is not None:
                return _print_best(final, False)
            if final.finished:  # following it worked: say why there is no best, exit 0
                _print_no_best(final, trials, sys.stdout)
        elif args.command == "best":
            with _client(args) as client:
                status = client.status(args.study_id)
                # no best: the trials' reports tell why (a best stopped early, a wrong metric)
                trials = (client.trials(args.study_id, True)
                          if status.best is None and status.finished else [])
            return _print_best(status, args.json, trials)
        elif args.command == "trials":
            if args.reports and args.format != "json":
                raise InvalidInputError("--reports", True, "needs --format json (a table or "
                                        "CSV has one row per trial, no room for its reports)")
            with _client(args) as client:
                _print_trials(client.trials(args.study_id, args.reports), args.format)
        elif args.command == "report":
            target = args.out or Path("results")  # by default ./results/STUDY_ID
            why = unwritable_folder(target)
            if why is not None:  # said before reading the study
                raise InvalidInputError("--out", str(target.absolute()), "must be a folder this "
                                        f"user can write to or create (it {why})")
            out = args.out or _results_dir(Path("."), args.study_id)
            with _client(args) as client:
                status = client.status(args.study_id)
                trials = client.trials(args.study_id, True)
            _report(status, trials, out)
        elif args.command == "importance":
            with _client(args) as client:
                metric = client.status(args.study_id).metric
                found = study_importance(client.trials(args.study_id, True), metric)
            _print_importance(found, args.json)
        elif args.command == "stop":
            if not key_path().exists():  # a new key owns no study: nothing it could stop
                raise InvalidInputError("researcher key", str(key_path()), "must exist: a "
                                        "study is stopped with the key that submitted it "
                                        "(set TUNEFLEET_HOME to where that key is)")
            with _client(args, sign=True) as client:
                before = client.status(args.study_id)
                s = before if before.finished else client.stop(args.study_id)
            if s is before or s.state != "stopped":  # it ended before the stop could
                why = f" ({s.end_reason})" if s.end_reason else ""
                print(f"study {s.study_id} had already ended: {s.state}{why}; nothing was "
                      "stopped")
            else:
                print(f"study {s.study_id}: {s.state}; no new trials, running trials are "
                      "being stopped")
        elif args.command == "studies":
            with _client(args) as client:
                started = time.monotonic()
                for s in client.studies():
                    print(f"{s.study_id}  {s.name:<24} {_progress_line(s, started)[10:]}")
        elif args.command == "run":
            with _interrupted_by_term_and_hangup():  # cleaned up as after Ctrl-C
                return _run_local(args)
        elif args.command == "try":
            return _try(args)
    except BrokenPipeError:  # the reader went away (`| head`): quietly, as other tools do
        _silence_stdout()
        return 0
    except InvalidInputError as exc:  # a flag's value is a usage error, as argparse's own
        print(f"tunefleet: error: {exc}", file=sys.stderr)
        return 2 if exc.field.startswith("--") else 1
    except (TunefleetError, OSError) as exc:
        print(f"tunefleet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunefleet: interrupted", file=sys.stderr)
        return 130
    return 0


def _silence_stdout() -> None:
    """Point stdout at devnull, so the interpreter's flush at exit finds no broken pipe to
    complain about (the recipe of Python's signal documentation)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (captured, replaced): nothing to flush
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

