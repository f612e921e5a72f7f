"""A real study: a coordinator and two node agents as processes, driven by the real CLI."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import grpc
import pytest

from client.local import LocalCluster
from tests.integration.helpers import cli, last_values, query
from tunefleet.v1 import researcher_pb2


@pytest.mark.slow
def test_template_study_runs_end_to_end(tmp_path: Path, small_study: Path) -> None:
    with LocalCluster(agents=2, state_dir=tmp_path / "cluster") as cluster:
        cluster.wait_for_nodes(2)
        submitted = cli("submit", str(small_study), *cluster.connection_args, check=True)
        study_id = submitted.stdout.strip().splitlines()[-1]
        assert len(study_id) == 12

        watched = cli("watch", study_id, *cluster.connection_args, timeout=300)
        assert watched.returncode == 0, watched.stderr
        assert "completed" in watched.stdout

        db = cluster.db_path
        trials = query(db, "SELECT number, state, step FROM trials WHERE study_id = ?",
                       (study_id,))
        assert len(trials) == 4
        # The template's default scheduler (Hyperband) may stop weak trials early.
        assert {state for _, state, _ in trials} <= {"completed", "pruned"}
        completed = {n for n, state, _ in trials if state == "completed"}
        assert completed and all(step == 3 for n, _, step in trials if n in completed)
        # Every epoch each trial ran was reported and stored exactly once (a stopped trial may
        # finish the epoch it was in when the stop arrived, after its last counted step).
        reports = query(db, "SELECT r.trial_number, r.step FROM reports r JOIN attempts a ON "
                        "a.id = r.attempt_id WHERE r.study_id = ? AND a.purpose = 'trial'",
                        (study_id,))
        for n, _, last in trials:
            steps = sorted(s for t, s in reports if t == n)
            assert steps == list(range(1, len(steps) + 1)) and len(steps) >= last
        nodes = {n for (n,) in query(db, "SELECT DISTINCT node_id FROM attempts")}
        assert len(nodes) == 2  # both agents took work

        best = cli("best", study_id, "--json", *cluster.connection_args, check=True)
        shown = json.loads(best.stdout)
        values = {t: v for t, v in last_values(db, study_id, "val_loss").items()
                  if t in completed}
        assert shown["value"] == pytest.approx(min(values.values()))
        assert shown["trial_id"] == min(values, key=values.__getitem__)
        # The best trial was run again on the other node, and the two results agree.
        assert shown["verification"] == "verified", shown["verification_detail"]
        rows = query(db, "SELECT node_id, state, error FROM attempts WHERE purpose = 'verify'")
        assert len(rows) == 1, rows
        (rerun_node, _, _), = rows
        (original_node,), = query(db, "SELECT node_id FROM attempts WHERE purpose = 'trial' "
                                      "AND trial_number = ? AND state = 'completed'",
                                  (shown["trial_id"],))
        assert rerun_node != original_node
        assert set(shown["params"]) == {"lr", "hidden", "depth", "dropout", "weight_decay",
                                        "batch_size", "activation"}

        table = cli("trials", study_id, "--format", "csv", *cluster.connection_args,
                    check=True)
        assert len(table.stdout.strip().splitlines()) == 5
        status = cli("status", study_id, *cluster.connection_args, check=True)
        assert "completed" in status.stdout
        assert f"{len(completed)} completed, {4 - len(completed)} pruned" in status.stdout
        few = cli("importance", study_id, *cluster.connection_args)
        assert few.returncode != 0 and "needs at least 8 trials" in few.stderr
        report = cli("report", study_id, "--out", str(tmp_path / "report"),
                     *cluster.connection_args, check=True)
        assert f"results in {tmp_path / 'report'}" in report.stdout
        saved = json.loads((tmp_path / "report" / "best.json").read_text())
        assert saved["best"]["trial_id"] == shown["trial_id"] and saved["cost"]["slot_hours"] > 0
        assert (tmp_path / "report" / "learning_curves.png").stat().st_size > 10_000
        assert "cost: " in status.stdout and "slot-hours" in status.stdout


def test_tiny_study_through_sdk_with_failures_recorded(tmp_path: Path, tiny_train_dir: Path
                                                       ) -> None:
    """A torch-free study: each trial reports three steps; a crashing trial is retried. Its
    first trial runs an enqueued configuration, the optimum."""
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace(
        "x = trial.params['x']\n",
        "x = trial.params['x']\nif trial.params.get('crash'):\n    raise SystemExit('boom: crash')\n",
    ))
    (tiny_train_dir / "study.toml").write_text(
        (tiny_train_dir / "study.toml").read_text().replace(
            "seed = 1\n", "seed = 1\nenqueue = [{ x = 0.3, crash = false }]\n")
        + 'crash = { type = "categorical", choices = [false, true] }\n'
    )
    from client.config import researcher_identity
    from client.sdk import Client, build_bundle
    from tunefleet.study import load_study_file

    with LocalCluster(agents=2, state_dir=tmp_path / "cluster") as cluster:
        identity, _ = researcher_identity()
        with Client(cluster.address, identity, cluster.security) as client:
            study_id = client.submit_file(tiny_train_dir / "study.toml")
            final = list(client.watch(study_id))[-1]
            trials = client.trials(study_id, include_reports=True)
            assert client.trials(study_id, include_reports=True, page_size=1) == trials
            # a client from before paging gets an error, not the first page as if all
            request = researcher_pb2.ListTrialsRequest(study_id=study_id, page_size=1)
            with pytest.raises(grpc.RpcError) as info:
                client._stub.ListTrials(request, timeout=30, metadata=client._read(request))
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "update tunefleet" in (info.value.details() or "")
        assert final.state == "completed" and len(trials) > 1
        crashed = [t for t in trials if t.params["crash"]]
        fine = [t for t in trials if not t.params["crash"]]
        assert crashed and fine
        for t in crashed:
            # a retry goes to the other agent when it is free, and ends the trial there
            # when it fails the same way; else it runs where it failed, up to 3 attempts
            assert t.state == "failed" and "boom: crash" in t.error
            assert (t.attempts == 3 and t.error.startswith("gave up after 3 attempts")) or (
                t.attempts in (2, 3) and "failed the same way on nodes" in t.error)
        for t in fine:
            assert t.state == "completed" and [r["step"] for r in t.reports] == [1, 2, 3]
            assert t.value == pytest.approx((t.params["x"] - 0.3) ** 2 + 1 / 3)
        assert final.best is not None
        assert final.best.value == min(t.value for t in fine)
        first = next(t for t in trials if t.trial_id == 0)
        assert first.params == {"x": 0.3, "crash": False}  # the enqueued configuration
        assert final.best.value == pytest.approx(1 / 3)  # (0.3 - 0.3) ** 2 + 1 / 3
        listed = cli("trials", study_id, *cluster.connection_args, check=True).stdout
        assert "boom: crash" in listed
        # report's default folder, in the study's folder, stays out of its bundle (before,
        # only the one `run` writes did)
        cli("report", study_id, *cluster.connection_args, check=True, cwd=tiny_train_dir)
        assert (tiny_train_dir / "results" / study_id / "best.json").is_file()
        bundle = build_bundle(load_study_file(tiny_train_dir / "study.toml"), tiny_train_dir,
                              identity)
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(bundle.data))) as tar:
            assert not [n for n in tar.getnames() if n.startswith("results")]


def test_importance_names_the_parameter_that_drives_the_metric(tmp_path: Path,
                                                                tiny_train_dir: Path) -> None:
    """The loss grows with x alone; y is a parameter the training code never reads."""
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("loss=(x - 0.3) ** 2 + 1.0 / step",
                                               "loss=2 * x + 1.0 / step"))
    (tiny_train_dir / "study.toml").write_text(
        (tiny_train_dir / "study.toml").read_text().replace("max_trials = 6", "max_trials = 12")
        + 'y = { type = "float", low = 0.0, high = 1.0 }\n'
    )
    with LocalCluster(agents=2, state_dir=tmp_path / "cluster") as cluster:
        cluster.wait_for_nodes(2)
        study_id = cli("submit", str(tiny_train_dir / "study.toml"), *cluster.connection_args,
                       check=True).stdout.strip().splitlines()[-1]
        cli("watch", study_id, *cluster.connection_args, timeout=120, check=True)
        shown = json.loads(cli("importance", study_id, "--json", *cluster.connection_args,
                               check=True).stdout)
        table = cli("importance", study_id, *cluster.connection_args, check=True).stdout
    assert (shown["metric"], shown["step"], shown["trials"]) == ("loss", 3, 12)
    assert list(shown["importance"]) == ["x", "y"] and shown["importance"]["x"] > 0.8
    assert shown["r2"] > 0.5
    assert "importance for loss at step 3 (12 trials)" in table and "  x " in table


def test_a_deadline_ends_a_study_of_unbounded_trials_on_time(tmp_path: Path,
                                                            tiny_train_dir: Path) -> None:
    """No trial count: the deadline alone bounds the study; running trials are stopped."""
    import time
    from datetime import UTC, datetime

    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("time.sleep(0.05)", "time.sleep(0.5)"))
    deadline = datetime.fromtimestamp(time.time() + 6, UTC).isoformat().replace("+00:00", "Z")
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", f'deadline = {deadline}')
                     .replace("max = 3", "max = 100"))
    with LocalCluster(agents=2, state_dir=tmp_path / "cluster") as cluster:
        cluster.wait_for_nodes(2)
        study_id = cli("submit", str(study), *cluster.connection_args,
                       check=True).stdout.strip().splitlines()[-1]
        watched = cli("watch", study_id, *cluster.connection_args, timeout=60, check=True)
        ended = time.time()
        status = cli("status", study_id, *cluster.connection_args, check=True).stdout
        trials = query(cluster.db_path, "SELECT state FROM trials WHERE study_id = ?",
                       (study_id,))
    assert f"completed (deadline {deadline} passed)" in status
    [last] = [line for line in watched.stdout.splitlines() if "] completed" in line]
    assert f"(deadline {deadline} passed)" in last
    # no trial ran to the end: watch says so, and names the best that was stopped early
    assert "with no trial run to the end" in watched.stdout
    assert "the best stopped early: trial" in watched.stdout
    assert ended - datetime.fromisoformat(deadline).timestamp() < 10  # the sweep, the stop
    assert trials and {s for (s,) in trials} <= {"pruned", "failed"}  # none ran 100 steps
    assert any(s == "pruned" for (s,) in trials)


def test_a_credit_budget_ends_a_study_at_the_coordinators_prices(tmp_path: Path,
                                                               tiny_train_dir: Path) -> None:
    """3,600 credits per slot-hour: a credit a second. A budget of 4 credits ends the study
    after about two seconds of two agents' time, and the ledger shows what each node earned."""
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("time.sleep(0.05)", "time.sleep(0.5)"))
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_credits = 4")
                     .replace("max = 3", "max = 100"))
    with LocalCluster(agents=2, state_dir=tmp_path / "cluster",
                      coordinator_args=["--price-slot-hour", "3600"]) as cluster:
        cluster.wait_for_nodes(2)
        study_id = cli("submit", str(study), *cluster.connection_args,
                       check=True).stdout.strip().splitlines()[-1]
        cli("watch", study_id, *cluster.connection_args, timeout=60, check=True)
        status = cli("status", study_id, *cluster.connection_args, check=True).stdout
        ledger = subprocess.run(
            [sys.executable, "-m", "coordinator", "ledger", "--db", str(cluster.db_path),
             "--json"], capture_output=True, text=True, timeout=60, check=True)
    assert "completed (max_credits reached (" in status
    spent = float(status.split("cost: ")[1].split(" credits")[0])
    assert 4 <= spent < 12  # stopped within the sweep and the stop's grace
    earned = json.loads(ledger.stdout)
    assert sum(p["credits"] for p in earned["providers"]) == pytest.approx(spent, rel=0.05)
    assert len(earned["providers"]) == 2 and len(earned["researchers"]) == 1
