"""`tunefleet run --local` when things go wrong: interrupted runs, dead agents, results that
cannot be written. A real embedded coordinator and real agents, as the README's quick start
runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.config import researcher_identity
from client.local import LocalCluster
from client.sdk import Client
from tests.integration.helpers import cli, query
from tunefleet.study import load_study_file


def _left_running(state: Path, study_dir: Path) -> str:
    """What an interrupted `tunefleet run --state-dir STATE` leaves: the study submitted and
    running (no agent ran it), the coordinator gone. Returns the study's id."""
    identity, _ = researcher_identity()
    with LocalCluster(0, state_dir=state, researchers=[identity.key_id]) as cluster, \
            Client(cluster.address, identity, cluster.security) as client:
        return client.submit(load_study_file(study_dir / "study.toml"), study_dir).study_id


def test_a_run_after_an_interrupted_one_resumes_its_study_instead_of_running_two(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    # before, the new run submitted a second study and the coordinator resumed the first as
    # well: both ran to the end, twice the compute, and the first's results were never written.
    # The state dir is inside the study's directory: it must stay out of the bundle, else the
    # bundle changes as the database does, and the study never looks the same
    state = tiny_train_dir / "state"
    study = tiny_train_dir / "study.toml"
    left = _left_running(state, tiny_train_dir)
    proc = cli("run", str(study), "--local", "1", "--state-dir", str(state), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert f"study {left} (tiny): resuming it where an earlier run left it" in proc.stdout
    assert query(state / "coordinator.db", "SELECT id, state FROM studies") == [
        (left, "completed")]
    assert (tiny_train_dir / "results" / left / "best.json").is_file()


def test_a_run_whose_study_changed_stops_the_one_an_earlier_run_left(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    state = tmp_path / "state"
    study = tiny_train_dir / "study.toml"
    left = _left_running(state, tiny_train_dir)
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2"))
    proc = cli("run", str(study), "--local", "1", "--state-dir", str(state), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (f"stopped study {left} (tiny), left running by an earlier run: its study file "
            "has changed since") in proc.stdout
    rows = dict(query(state / "coordinator.db", "SELECT id, state FROM studies"))
    assert rows.pop(left) == "stopped" and list(rows.values()) == ["completed"]


def test_a_study_stopped_because_files_in_its_folder_changed_names_them(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    # before, a log written into the study's folder (`tunefleet run ... | tee run.log`) made
    # the next run stop the interrupted study saying only that its file or code had changed
    import io

    from client.cli import SUBMITTED_FILES, _resume_or_submit

    identity, _ = researcher_identity()
    spec = load_study_file(tiny_train_dir / "study.toml")
    record = tmp_path / SUBMITTED_FILES
    with LocalCluster(0, state_dir=tmp_path / "state", researchers=[identity.key_id]) as cluster, \
            Client(cluster.address, identity, cluster.security) as client:
        first = _resume_or_submit(client, identity, spec, tiny_train_dir, io.StringIO(), record)
        again = io.StringIO()
        assert _resume_or_submit(client, identity, spec, tiny_train_dir, again,
                                 record).study_id == first.study_id
        assert "resuming it" in again.getvalue()
        (tiny_train_dir / "run.log").write_text("starting an embedded coordinator\n")
        (tiny_train_dir / "runs").mkdir()
        (tiny_train_dir / "runs" / "out.txt").write_text("left out of bundles")
        told = io.StringIO()
        second = _resume_or_submit(client, identity, spec, tiny_train_dir, told, record)
        (tiny_train_dir / "train.py").chmod(0o755)  # the same contents: no file to name
        mode = io.StringIO()
        _resume_or_submit(client, identity, spec, tiny_train_dir, mode, record)
    assert f"stopped study {second.study_id} (tiny), left running by an earlier run: its code " \
        "has changed since" in mode.getvalue()
    assert second.study_id != first.study_id
    assert (f"stopped study {first.study_id} (tiny), left running by an earlier run: files in "
            "its folder have changed since (run.log); every file there is part of the study's "
            "code") in told.getvalue()


def test_a_run_whose_agents_all_exit_says_so_instead_of_waiting_forever(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    state = tmp_path / "state"
    (state / "agent-0").mkdir(parents=True)
    (state / "agent-0" / "node.key").write_bytes(b"")  # the agent cannot start with it
    proc = cli("run", str(tiny_train_dir / "study.toml"), "--local", "1", "--state-dir",
               str(state), timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "every local agent exited, so the study cannot go on" in err[0]
    assert "agent 0: node-agent: error: cannot read the Ed25519 key" in err[0]
    assert f"the state is kept in {state}" in err[0]


def test_results_that_cannot_be_written_are_a_warning_and_the_best_is_still_printed(
        tiny_train_dir: Path) -> None:
    # before, the results folder's marker was written outside the guard: the finished study
    # ended in an error, its best never printed and its temporary state deleted
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2"))
    (tiny_train_dir / "results").write_text("a file where the results folder would go")
    proc = cli("run", str(study), "--local", "1", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "tunefleet: warning: could not write the results" in proc.stderr
    assert "best trial" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_run_ended_by_sigterm_or_sighup_cleans_up_and_says_what_was_lost(
        sig: signal.Signals, tmp_path: Path, tiny_train_dir: Path) -> None:
    # before, it exited 143 without a word and left its temporary state directory behind
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "client", "run",
                             str(tiny_train_dir / "study.toml"), "--local", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    while "study " not in (line := proc.stdout.readline()):
        assert line, proc.stderr.read()
    time.sleep(0.5)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith(  # one line (before, a second one followed)
        "tunefleet: interrupted; its state was in a temporary directory and is gone"), err
    assert not list(tmp_path.glob("tunefleet-local-*"))


def test_a_trial_the_scheduler_stops_trains_no_step_past_its_stop(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    # before, should_stop() only looked at the control pipe: the stop for a report came a round
    # trip later, and nearly every pruned trial trained (and reported) one more step
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 9")
                     .replace('scheduler = "fifo"', 'scheduler = "asha"')
                     .replace("min = 1\nmax = 3\n", "min = 1\nmax = 9\neta = 3\n"))
    state = tmp_path / "state"
    proc = cli("run", str(study), "--local", "2", "--state-dir", str(state), timeout=180)
    assert proc.returncode == 0, proc.stderr
    rows = query(state / "coordinator.db",
                 "SELECT t.number, t.step, MAX(r.step) FROM trials t JOIN reports r ON "
                 "r.study_id = t.study_id AND r.trial_number = t.number WHERE t.state = 'pruned' "
                 "GROUP BY t.number")
    assert len(rows) >= 3, rows  # asha stopped some
    past = [number for number, step, last in rows if last > step]
    assert len(past) <= len(rows) // 4, rows  # a decision slower than 1 s may still let one by


def test_a_run_whose_trials_stop_short_of_fidelity_max_says_so(tiny_train_dir: Path) -> None:
    # before, nothing said it: a script reporting every 5th step up to 25 of 27 never gave
    # the scheduler a full-fidelity result, so Hyperband's check of its rungs never engaged
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("(trial.max_step or 3) + 1", "trial.max_step"))
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace('scheduler = "fifo"', 'scheduler = "asha"')
                     .replace("max_trials = 6", "max_trials = 3"))
    proc = cli("run", str(study), "--local", "1", "--no-report", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert ("completed trial(s) last reported before fidelity.max (3), at step(s) 2: asha "
            "takes only results at step 3 as full ones") in proc.stderr
    # a study whose trials reach it hears nothing of it
    train.write_text(train.read_text().replace("trial.max_step", "trial.max_step + 1"))
    proc = cli("run", str(study), "--local", "1", "--no-report", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "fidelity.max" not in proc.stderr


def test_a_run_ignores_the_researchers_connection_variables(
        tiny_train_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # before, TUNEFLEET_INSECURE=1 (set for another coordinator) reached the local agents
    # beside their --ca, which they refuse: every agent exited and the run failed
    monkeypatch.setenv("TUNEFLEET_INSECURE", "1")
    monkeypatch.setenv("TUNEFLEET_CA", "/nonexistent/ca.pem")
    monkeypatch.setenv("TUNEFLEET_COORDINATOR", "127.0.0.1:9")
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2"))
    proc = cli("run", str(study), "--local", "1", "--no-report", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "best trial" in proc.stdout


def test_watch_follows_a_study_through_a_coordinator_restart(
        tmp_path: Path, tiny_train_dir: Path) -> None:
    # before, watch exited 1 with "cannot reach the coordinator" though the study went on
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("time.sleep(0.05)", "time.sleep(0.3)"))
    identity, _ = researcher_identity()
    with LocalCluster(1, state_dir=tmp_path / "state") as cluster:
        with Client(cluster.address, identity, cluster.security) as client:
            study_id = client.submit_file(tiny_train_dir / "study.toml")
        watch = subprocess.Popen(
            [sys.executable, "-m", "client", "watch", study_id, *cluster.connection_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            assert cluster.coordinator is not None and watch.poll() is None
            cluster.coordinator.terminate()
            cluster.coordinator.wait(timeout=30)
            time.sleep(1.0)  # watch finds it gone
            cluster.start_coordinator(listen=cluster.address)
            out, err = watch.communicate(timeout=150)
        finally:
            if watch.poll() is None:
                watch.kill()
    assert watch.returncode == 0, err
    assert "lost the coordinator" in err and "reconnected" in err
    assert "completed" in out and "best trial" in out
    # the stopping coordinator ended the open watch stream itself (before: a CancelledError
    # traceback for WatchStudy; an agent's Session stream may still log one, see the log)
    assert "WatchStudy" not in (tmp_path / "state" / "coordinator.log").read_text()
