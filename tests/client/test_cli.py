"""The researcher CLI's local commands (no coordinator needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from client.cli import main


def test_keygen_creates_a_private_key_once(capsys: pytest.CaptureFixture[str],
                                           _isolated_home: Path) -> None:
    assert main(["keygen"]) == 0
    first = capsys.readouterr().out
    path = _isolated_home / "researcher.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert main(["keygen"]) == 0
    again = capsys.readouterr().out
    assert "existing" in again and first.splitlines()[-1] == again.splitlines()[-1]


def test_keygen_force_keeps_the_key_it_replaces(capsys: pytest.CaptureFixture[str],
                                               _isolated_home: Path) -> None:
    # before, the only key that could read and stop its studies was deleted without a word
    assert main(["keygen"]) == 0
    old = (_isolated_home / "researcher.key").read_bytes()
    capsys.readouterr()
    assert main(["keygen", "--force"]) == 0
    captured = capsys.readouterr()
    [kept] = _isolated_home.glob("researcher.key.replaced-*")
    assert kept.read_bytes() == old and (_isolated_home / "researcher.key").read_bytes() != old
    assert f"kept the replaced key as {kept}" in captured.err and "created" in captured.out


def test_stop_without_a_key_creates_none(capsys: pytest.CaptureFixture[str],
                                         _isolated_home: Path) -> None:
    # before, it made a new key (which owns no study) and then failed with NOT_FOUND
    assert main(["stop", "abcdef123456", "--coordinator", "127.0.0.1:9", "--insecure"]) == 1
    assert "researcher key: got" in capsys.readouterr().err
    assert not (_isolated_home / "researcher.key").exists()


@pytest.mark.parametrize(("flags", "named"), [
    (["--coordinator", "no-port", "--insecure"], "--coordinator"),
    (["--coordinator", "127.0.0.1:9", "--ca", "/nonexistent/ca.pem"], "--ca"),
])
def test_connection_flag_errors_are_usage_errors(flags: list[str], named: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "abcdef123456", *flags]) == 2
    assert f"tunefleet: error: {named}: got" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [123, None, "", "x" * 65, "a\nb"])
def test_the_sdk_refuses_what_cannot_be_a_study_id_before_any_call(bad: object) -> None:
    from client.sdk import Client
    from tunefleet.errors import InvalidInputError
    from tunefleet.tls import ChannelSecurity

    client = Client("127.0.0.1:9", None, ChannelSecurity(insecure=True), timeout=0.5)
    with pytest.raises(InvalidInputError, match="^study_id: got"):
        client.stop(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="^study_id: got"):
        client.trials(bad)  # type: ignore[arg-type]
    client.close()


def test_unreachable_coordinator_messages_say_what_to_change() -> None:
    import grpc

    from client.sdk import CoordinatorError

    tls = CoordinatorError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; "
                           "last error: UNKNOWN: ipv4:127.0.0.1:5: Tls handshake failed "
                           "(TSI_PROTOCOL_FAILURE): certificate signature failure", "h:5")
    assert "its TLS certificate is not one --ca trusts" in str(tls)
    plain = CoordinatorError(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:5: Socket closed",
                             "h:5", insecure=True)
    assert "give its ca.pem with --ca instead of --insecure" in str(plain)


def test_init_writes_template_and_refuses_to_overwrite(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "study.toml").is_file() and (tmp_path / "s" / "train.py").is_file()
    assert main(["init", str(tmp_path / "s")]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_trials_reports_without_json_is_refused(fmt: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # before, --reports was silently ignored outside --format json (refused before any call)
    assert main(["trials", "abc", "--reports", "--format", fmt,
                 "--coordinator", "127.0.0.1:9"]) == 2  # a usage error
    assert "--reports: got True; needs --format json" in capsys.readouterr().err


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # before, it wrote beside whatever was there, and the bundle (the whole directory) then
    # carried those files to every trial
    (tmp_path / "data.bin").write_bytes(b"x" * 10)
    assert main(["init", str(tmp_path)]) == 1
    assert f"{tmp_path} is not empty (1 entry, such as 'data.bin')" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty")]) == 0


def test_try_runs_standalone_with_params_and_defaults(tiny_train_dir: Path,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", "x=0.3"]) == 0
    out = capfd.readouterr().out
    assert "trying" in out and "x=0.3" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("[trial]")] == [
        "step=1", "step=2", "step=3"]
    assert "step=1 loss=1\n" in out and "step=3 loss=0.333333\n" in out  # (x-0.3)^2 + 1/step


@pytest.mark.parametrize("param, field", [
    ("x=2.0", "--param.x"), ("y=1", "--param y"), ("x", "--param"),
])
def test_try_refuses_bad_params(tiny_train_dir: Path, param: str, field: str,
                                capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", param]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]


def test_commands_need_a_coordinator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "abc"]) == 2  # --coordinator missing: a usage error
    assert "--coordinator" in capsys.readouterr().err


def test_run_local_refuses_a_gpu_study_without_gpus(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import write_template

    # No machine has a GPU this large (the most a study may ask for), so the check fails here
    # and on GPU machines alike.
    study = write_template(tmp_path / "s", gpus="1", min_gpu_memory_gb="4096", max_trials="2")
    assert main(["run", str(study), "--local", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resources.gpus" in err[-1] and "gpus = 0" in err[-1]


def test_trials_show_the_gpu_use_where_it_was_measured(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from client.cli import _print_trials
    from client.results import TrialResult

    gpu = TrialResult(0, "completed", {"x": 0.5}, 0.25, 3, 1, gpu_utilization=87.4,
                      gpu_memory_peak_gb=3.25)
    cpu = TrialResult(1, "pruned", {"x": 0.1}, 0.5, 1, 1)
    big = TrialResult(2, "completed", {"x": 0.2}, 0.3, 3, 1, gpu_utilization=100.0,
                      gpu_memory_peak_gb=139.8)  # an H200 holds that much
    _print_trials([gpu, cpu, big], "table")
    header, first, second, third = capsys.readouterr().out.splitlines()
    assert "gpu%    GiB" in header
    assert "    87    3.2  x=0.5" in first and "     -      -  x=0.1" in second
    assert "   100  139.8  x=0.2" in third
    _print_trials([cpu], "table")  # no trial measured: no column
    assert "gpu%" not in capsys.readouterr().out
    _print_trials([gpu, cpu], "csv")
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith("attempts,gpu_utilization,gpu_memory_peak_gb,error")
    assert rows[1].endswith(",87.4,3.25,") and rows[2].endswith(",,,")
    _print_trials([gpu], "json")
    import json

    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["gpu_utilization"], shown["gpu_memory_peak_gb"]) == (87.4, 3.25)


def test_run_writes_the_results_beside_the_study_and_a_failed_report_hides_nothing(
    tiny_train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2"))
    assert main(["run", str(study), "--local", "1", "--json"]) == 0
    captured = capsys.readouterr()
    best = json.loads(captured.out)  # with --json stdout holds the JSON only
    results = tiny_train_dir / "results" / best["study_id"]
    progress = captured.err  # the progress goes to stderr
    assert "starting an embedded coordinator" in progress and "done 2/2" in progress
    assert f"results in {results}: best.json, trials.csv" in progress
    assert "cost: 0 credits (" in progress and "slot-hours)" in progress  # CPU slots: 0
    saved = json.loads((results / "best.json").read_text())
    assert saved["best"]["trial_id"] == best["trial_id"]
    blocked = tiny_train_dir / "blocked"
    blocked.write_text("a file where the results directory would go")
    # refused before the study runs (before, it ran, then could not write its results)
    assert main(["run", str(study), "--local", "1", "--out", str(blocked)]) == 2
    captured = capsys.readouterr()
    assert f"--out: got '{blocked}'; must be a folder this user can write to or create (it " \
        "is a file)" in captured.err
    assert "starting" not in captured.out
    assert main(["run", str(study), "--local", "1", "--state-dir", str(blocked)]) == 2
    assert "--state-dir: got" in capsys.readouterr().err
    assert main(["run", str(study), "--local", "1", "--no-report"]) == 0
    captured = capsys.readouterr()
    assert "results in" not in captured.out + captured.err
    assert "done 2/2" in captured.out and "cost: " in captured.out  # without --json: stdout
    assert sorted(p.name for p in (tiny_train_dir / "results").iterdir()) == [
        ".tunefleet-results", best["study_id"]]  # marked: bundles leave it out


def test_a_study_a_limit_ended_before_any_trial_finished_says_so_and_shows_the_best_stopped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    from client.cli import _print_best
    from client.report import write_report
    from client.results import StudyStatus, TrialResult

    counts = {"pending": 0, "running": 0, "completed": 0, "pruned": 2, "failed": 0}
    ended = StudyStatus("s1", "s", "completed", "loss", "max", counts, None, None, 0.0, 9.0,
                        "deadline 2026-12-01T18:00:00Z passed")
    trials = [TrialResult(0, "pruned", {"x": 0.1}, 0.3, 4, 1),
              TrialResult(1, "pruned", {"x": 0.7}, 0.8, 4, 1)]
    assert _print_best(ended, False, trials) == 1
    out = capsys.readouterr().out
    assert "ended (deadline 2026-12-01T18:00:00Z passed) with no trial run to the end" in out
    assert "the best stopped early: trial 1, loss=0.8 at step 4" in out  # mode is max
    write_report(ended, trials, tmp_path)
    assert json.loads((tmp_path / "best.json").read_text())["best_pruned"]["trial_id"] == 1
    running = StudyStatus("s1", "s", "running", "loss", "min", counts, None, None, 0.0, 0.0)
    assert _print_best(running, False, trials) == 1
    assert "no completed trial with a value yet" in capsys.readouterr().out


def test_the_best_configuration_prints_as_toml_that_enqueue_takes(
    capsys: pytest.CaptureFixture[str]
) -> None:
    import tomllib

    from client.cli import _print_best
    from client.results import StudyStatus, TrialResult

    # every digit: before, 6 significant ones, so a pasted configuration was another one
    best = TrialResult(3, "completed", {"lr": 0.25325307785026463, "wd": 1e-05, "act": "gelu",
                                        "bn": False, "n": 64}, 0.2, 9, 1)
    done = StudyStatus("s1", "s", "completed", "loss", "min",
                       {"pending": 0, "running": 0, "completed": 1, "pruned": 0, "failed": 0},
                       best, 1, 0.0, 1.0)
    assert _print_best(done, False) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert tomllib.loads("\n".join(lines)) == best.params


def test_try_refuses_a_number_beyond_a_double_by_name(tiny_train_dir: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    # "x=1" followed by 400 zeros used to overflow with a traceback
    assert main(["try", str(tiny_train_dir / "train.py"), "--param", "x=1" + "0" * 400]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunefleet: error: --param.x: got inf;"), err


def test_a_misspelled_objective_metric_is_named_with_the_metrics_reported(
    tiny_train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tiny_train_dir / "study.toml"
    study.write_text(study.read_text().replace("max_trials = 6", "max_trials = 2")
                     .replace('metric = "loss"', 'metric = "accuracy"'))
    train = tiny_train_dir / "train.py"
    train.write_text(train.read_text().replace("loss=", "acc=0.5, loss="))
    assert main(["run", str(study), "--local", "1", "--no-report"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "with no trial run to the end" in out[-2]
    assert out[-1].startswith("  no trial reported the objective metric 'accuracy' "
                              "(reported: acc, loss)")


def test_no_best_says_why_on_stderr_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from client.cli import _print_best
    from client.results import StudyStatus, TrialResult

    counts = {"pending": 0, "running": 0, "completed": 1, "pruned": 0, "failed": 0}
    ended = StudyStatus("s1", "s", "completed", "accuracy", "max", counts, None, 1, 0.0, 9.0,
                        "budget spent")
    trials = [TrialResult(0, "completed", {"x": 0.1}, None, 0, 1,
                          reports=[{"step": 1, "acc": 0.5, "loss": 1.0}])]
    assert _print_best(ended, True, trials) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) is None
    assert "the objective metric 'accuracy' (reported: acc, loss)" in captured.err
    named = [TrialResult(0, "pruned", {"x": 0.1}, 0.3, 1, 1,
                         reports=[{"step": 1, "accuracy": 0.3}])]
    assert _print_best(ended, False, named) == 1  # reported, but no trial ran to the end
    assert "objective metric" not in capsys.readouterr().out


PRINT_PARAMS = "import json\nfrom tunefleet import trial\nprint('PARAMS', json.dumps(trial.params))\n"


def test_try_runs_other_parameters_at_the_middle_of_ranges_and_the_first_choice(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import json

    (tmp_path / "train.py").write_text(PRINT_PARAMS)
    (tmp_path / "study.toml").write_text(
        'name = "defaults"\n[objective]\nmetric = "loss"\nmode = "min"\n'
        "[budget]\nmax_trials = 2\n[fidelity]\nmin = 1\nmax = 3\n[space]\n"
        'x = { type = "float", low = 0.0, high = 1.0 }\n'
        'lr = { type = "float", low = 1e-4, high = 1e-2, log = true }\n'
        'n = { type = "int", low = 1, high = 9 }\n'
        'act = { type = "categorical", choices = ["relu", "gelu", "tanh"] }\n'
        "bn = { type = \"categorical\", choices = [false, true] }\n"
    )
    assert main(["try", str(tmp_path / "train.py"), "--param", "x=0.25"]) == 0
    [line] = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("PARAMS ")]
    params = json.loads(line.removeprefix("PARAMS "))
    assert params["act"] == "relu" and params["bn"] is False  # the first choice
    assert params["x"] == 0.25 and params["n"] == 5 and abs(params["lr"] - 1e-3) < 1e-12


def test_try_refuses_a_named_study_file_that_is_not_there(
    tiny_train_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent.toml"
    assert main(["try", str(tiny_train_dir / "train.py"), "--study", str(missing)]) == 1
    captured = capfd.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunefleet: error: ") and str(missing) in err[0]
    assert "trying" not in captured.out  # the script never ran
    (tiny_train_dir / "study.toml").unlink()  # the default beside the script stays optional
    (tiny_train_dir / "train.py").write_text(PRINT_PARAMS)
    assert main(["try", str(tiny_train_dir / "train.py")]) == 0
    assert "PARAMS {}" in capfd.readouterr().out


BROKEN_PIPE = """
import sys
from client import cli
from client.results import TrialResult

class Fake:
    def __enter__(self): return self
    def __exit__(self, *exc): pass
    def trials(self, study_id, include_reports=False):
        return [TrialResult(i, "completed", {"x": 0.5}, 1.0, 3, 1) for i in range(20000)]

cli._client = lambda args, sign=False: Fake()
sys.exit(cli.main(["trials", "abc"]))
"""


def test_a_reader_that_goes_away_ends_the_output_silently() -> None:
    import subprocess
    import sys

    # as `tunefleet trials ID | head -1`: the reader closes the pipe after one line
    proc = subprocess.Popen([sys.executable, "-c", BROKEN_PIPE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().split()[0] == b"id"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == ""


def test_params_follow_the_study_space_order_every_time() -> None:
    import io

    from client.report import write_trials_csv
    from client.results import status_from_proto, trial_from_proto
    from client.sdk import Client
    from tunefleet import serde
    from tunefleet.keys import Identity
    from tunefleet.tls import ChannelSecurity
    from tunefleet.v1 import researcher_pb2

    order = ["zeta", "lr", "act", "hidden", "bn", "dropout", "alpha"]
    params = {"zeta": 1, "lr": 0.01, "act": "relu", "hidden": 64, "bn": True, "dropout": 0.1,
              "alpha": "x"}
    info = researcher_pb2.StudyInfo(study_id="s1", state="completed")
    for name in order:
        info.spec.space.add(name=name, type="float")
    info.best.trial_id = 3
    serde.params_to_proto(params, info.best.params)
    listed = researcher_pb2.TrialList()
    serde.params_to_proto(params, listed.trials.add(trial_id=3).params)

    class Stub:  # the coordinator's replies, as they come off the wire
        def GetStudy(self, request: object, **kwargs: object) -> researcher_pb2.StudyInfo:
            return researcher_pb2.StudyInfo.FromString(info.SerializeToString())

        def ListTrials(self, request: object, **kwargs: object) -> researcher_pb2.TrialList:
            return researcher_pb2.TrialList.FromString(listed.SerializeToString())

    client = Client("127.0.0.1:1", Identity.generate(), ChannelSecurity(insecure=True))
    client._stub = Stub()  # type: ignore[assignment]
    with client:
        for _ in range(10):  # a protobuf map's order changes from one parse to the next
            best = client.status("s1").best
            assert best is not None and list(best.params) == order
            [trial] = client.trials("s1")
            assert list(trial.params) == order and trial.params == params
    table = io.StringIO()
    write_trials_csv([trial], table)  # trials.csv and `trials --format csv`: the same order
    assert table.getvalue().splitlines()[0].startswith("trial_id,state," + ",".join(order) + ",")
    # without the study's order (ListStudies leaves the space out): by name, every time
    bare = researcher_pb2.TrialInfo.FromString(listed.trials[0].SerializeToString())
    assert list(trial_from_proto(bare).params) == sorted(params)
    info.spec.ClearField("space")
    best = status_from_proto(researcher_pb2.StudyInfo.FromString(info.SerializeToString())).best
    assert best is not None and list(best.params) == sorted(params)


def test_stop_says_a_study_that_had_already_ended_was_not_stopped(
    tiny_train_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.config import researcher_identity
    from client.local import LocalCluster
    from client.sdk import Client
    from tunefleet.study import load_study_file

    text = (tiny_train_dir / "study.toml").read_text()
    short, long = tiny_train_dir / "short.toml", tiny_train_dir / "long.toml"
    short.write_text(text.replace("max_trials = 6", "max_trials = 1"))
    long.write_text(text.replace("max_trials = 6", "max_trials = 1000"))
    identity, _ = researcher_identity()
    with LocalCluster(1, researchers=[identity.key_id]) as cluster:
        connection = ["--coordinator", cluster.address, "--ca", str(cluster.security.ca)]
        with Client(cluster.address, identity, cluster.security) as client:
            ended = client.submit(load_study_file(short), tiny_train_dir).study_id
            for _ in client.watch(ended):
                pass
            running = client.submit(load_study_file(long), tiny_train_dir).study_id
        assert main(["stop", ended, *connection]) == 0
        out = capsys.readouterr().out
        assert f"study {ended} had already ended: completed (" in out
        assert "nothing was stopped" in out and "being stopped" not in out
        assert main(["stop", running, *connection]) == 0
        assert (f"study {running}: stopped; no new trials, running trials are being stopped"
                in capsys.readouterr().out)
        assert main(["stop", running, *connection]) == 0  # a second time: nothing to stop
        assert (f"study {running} had already ended: stopped (stopped by its owner); nothing "
                "was stopped" in capsys.readouterr().out)


def _studies_a_coordinator_would_refuse(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from tests.conftest import write_template

    missing = write_template(tmp_path / "missing", max_trials="2")
    (missing.parent / "train.py").unlink()
    past = write_template(tmp_path / "past", max_trials="2")
    past.write_text(past.read_text().replace("max_trials = 2",
                                             "max_trials = 2\ndeadline = 2020-01-01T00:00:00Z"))
    grid = write_template(tmp_path / "grid", searcher='"grid"', max_trials="2")
    grid.write_text(grid.read_text().replace("[space]\n", "[space]\n" + "".join(
        f'p{i} = {{ type = "int", low = 0, high = 100 }}\n' for i in range(9))))
    return {"entrypoint missing": (missing, "entrypoint: got 'train.py'; must be a file"),
            "deadline past": (past, "budget.deadline: got '2020-01-01"),
            "grid too large": (grid, "search.searcher: got 'grid'; the grid of this space")}


@pytest.mark.parametrize("case", ["entrypoint missing", "deadline past", "grid too large"])
def test_submit_refuses_before_a_key_or_the_network(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], _isolated_home: Path
) -> None:
    # before, a key was created and the bundle uploaded (and kept) before the refusal
    study, expected = _studies_a_coordinator_would_refuse(tmp_path)[case]
    assert main(["submit", str(study), "--coordinator", "127.0.0.1:1", "--insecure"]) == 1
    err = capsys.readouterr().err
    assert expected in err and "cannot reach" not in err
    assert not (_isolated_home / "researcher.key").exists()


@pytest.mark.parametrize("case", ["entrypoint missing", "deadline past", "grid too large"])
def test_run_local_refuses_before_a_cluster_starts(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before, a coordinator and agents started and left their state directory behind
    study, expected = _studies_a_coordinator_would_refuse(tmp_path)[case]
    state = tmp_path / "state"
    assert main(["run", str(study), "--local", "1", "--state-dir", str(state)]) == 1
    captured = capsys.readouterr()
    assert expected in captured.err and "starting" not in captured.out
    assert not state.exists()


def _try_params(tmp_path: Path, capfd: pytest.CaptureFixture[str], *given: str
                ) -> dict[str, object]:
    import json

    (tmp_path / "train.py").write_text(PRINT_PARAMS)
    (tmp_path / "study.toml").write_text(
        'name = "p"\n[objective]\nmetric = "loss"\n[budget]\nmax_trials = 2\n'
        '[fidelity]\nmax = 3\n[space]\n'
        'hidden = { type = "int", low = 16, high = 256, log = true }\n'
        'opt = { type = "categorical", choices = ["Adam", "adam", "SGD"] }\n'
        'k = { type = "categorical", choices = [1, "1"] }\n'
    )
    argv = ["try", str(tmp_path / "train.py")]
    for item in given:
        argv += ["--param", item]
    assert main(argv) == 0
    [line] = [ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("PARAMS ")]
    return json.loads(line.removeprefix("PARAMS "))  # type: ignore[no-any-return]


def test_try_gives_an_int_parameter_an_int_and_picks_the_choice_written(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # before, hidden=64.0 reached train.py as the float 64.0 (the coordinator sends ints), and
    # opt=adam picked "Adam", the first choice equal but for case
    params = _try_params(tmp_path, capfd, "hidden=64.0", "opt=adam", "k=1")
    assert params == {"hidden": 64, "opt": "adam", "k": "1"}
    assert isinstance(params["hidden"], int)
    assert _try_params(tmp_path, capfd, "hidden=1e2", "opt=sgd")["opt"] == "SGD"


def test_try_refuses_a_choice_only_case_tells_apart_and_a_study_file_as_the_script(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train.py").write_text(PRINT_PARAMS)
    _try_params(tmp_path, capfd)  # writes the study
    assert main(["try", str(tmp_path / "train.py"), "--param", "opt=ADAM"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--param opt: got 'ADAM'" in err[0] and "exactly" in err[0]
    # before, the TOML file was run as Python: a SyntaxError traceback
    assert main(["try", str(tmp_path / "study.toml")]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be the training script" in err[0]


def test_a_run_waits_for_the_trials_a_stop_ends_before_it_reads_them() -> None:
    # before, the results of a stopped study were written while its trials still showed
    # "running", and the best trial stopped early was missed
    from client.cli import _settled
    from client.results import StudyStatus

    def status(running: int, pruned: int) -> StudyStatus:
        return StudyStatus("s1", "s", "stopped", "loss", "min",
                           {"pending": 0, "running": running, "completed": 0,
                            "pruned": pruned, "failed": 0}, None, 2, 0.0, 1.0)

    class Client:
        def __init__(self) -> None:
            self.answers = [status(1, 1), status(0, 2)]

        def status(self, study_id: str) -> StudyStatus:
            return self.answers.pop(0)

    client = Client()
    assert _settled(client, status(2, 0)).counts["pruned"] == 2  # type: ignore[arg-type]
    assert client.answers == []


def test_the_progress_of_a_grid_without_a_trial_budget_counts_its_points() -> None:
    from client.cli import _progress_line
    from client.results import StudyStatus

    status = StudyStatus("s1", "s", "running", "loss", "min",
                         {"pending": 0, "running": 1, "completed": 3, "pruned": 0, "failed": 0},
                         None, None, 0.0, 1.0)
    assert " done 3/? " in _progress_line(status, 0.0)
    assert " done 3/20 " in _progress_line(status, 0.0, total=20)  # before, 3/? for a grid


def test_the_progress_line_says_why_a_study_runs_nothing() -> None:
    from client.cli import _progress_line
    from client.results import StudyStatus

    counts = {"pending": 0, "running": 0, "completed": 0, "pruned": 0, "failed": 0}
    why = "no node is connected (its trials need a CPU slot)"
    waiting = StudyStatus("s1", "s", "running", "loss", "min", counts, None, 4, 0.0, 0.0,
                          waiting_for=why)
    assert _progress_line(waiting, 0.0).endswith(f"(waiting: {why})")
    running = StudyStatus("s1", "s", "running", "loss", "min", counts, None, 4, 0.0, 0.0)
    assert "waiting" not in _progress_line(running, 0.0)


def test_the_progress_total_of_a_grid_is_the_smaller_of_the_grid_and_the_budget() -> None:
    # before, a 30-point grid with max_trials = 100 ended at "done 30/100"
    from client.cli import _progress_line
    from client.results import StudyStatus

    counts = {"pending": 0, "running": 0, "completed": 30, "pruned": 0, "failed": 0}
    status = StudyStatus("s1", "s", "completed", "loss", "min", counts, None, 100, 0.0, 1.0)
    assert "done 30/30 " in _progress_line(status, 0.0, total=30)
    assert "done 30/100 " in _progress_line(status, 0.0)  # not a grid: the budget
    counts["completed"] = 5
    smaller = StudyStatus("s1", "s", "running", "loss", "min", counts, None, 10, 0.0, 0.0)
    assert "done 5/10 " in _progress_line(smaller, 0.0, total=30)  # the budget is smaller


def test_report_refuses_a_results_folder_it_cannot_write_before_reading_the_study(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before, it read the whole study and then failed with "[Errno 13] ... 'results'"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert main(["report", "abcdef123456", "--out", str(blocked), "--coordinator",
                 "127.0.0.1:9", "--insecure"]) == 2  # no coordinator there: never asked
    assert f"--out: got '{blocked}'; must be a folder this user can write to or create (it " \
        "is a file)" in capsys.readouterr().err
