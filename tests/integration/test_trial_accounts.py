"""As root, a real agent runs each trial as an account of its own (real coordinator, TLS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.local import LocalCluster
from client.sdk import Client
from node_agent.sandbox import DEFAULT_UID_BASE
from tests.integration.helpers import wait_until_finished
from tunefleet.keys import Identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="accounts of their own need root")


def test_concurrent_trials_run_as_accounts_of_their_own(tmp_path: Path, tiny_train_dir: Path
                                                        ) -> None:
    identity = Identity.generate()
    (tiny_train_dir / "train.py").write_text(  # each trial says who it runs as and what it sees
        "import getpass, json, os, time\n"
        "from tunefleet import trial\n"
        "me = json.loads(os.environ['TUNEFLEET_TRIAL'])['attempt_id']\n"
        "others = [p for p in (f'../attempt-{me - 1}', f'../attempt-{me + 1}')\n"
        "          if os.path.isdir(p)]  # guessed: the work directory cannot be listed\n"
        "readable = sum(os.access(p, os.R_OK) for p in others)\n"
        "try:\n    listed = len(os.listdir('..'))\nexcept PermissionError:\n    listed = -1\n"
        "for step in (1, 2, 3):\n"
        "    trial.report(step, loss=trial.params['x'], uid=os.getuid(), gid=os.getgid(),\n"
        "                 named=float(getpass.getuser() == f'tunefleet-{os.getuid()}'),\n"
        "                 others=len(others), readable=readable, listed=listed)\n"
        "    time.sleep(0.3)  # long enough for the other slot's trial to run beside it\n"
    )
    with LocalCluster(agents=1, state_dir=tmp_path / "cluster", slots_per_agent=2) as cluster, \
            Client(cluster.address, identity, cluster.security) as client:
        study_id = client.submit_file(tiny_train_dir / "study.toml")
        wait_until_finished(client, study_id)
        trials = client.trials(study_id, include_reports=True)
    assert len(trials) == 6 and {t.state for t in trials} == {"completed"}
    reports = [p for t in trials for p in t.reports]
    assert all(p["uid"] >= DEFAULT_UID_BASE and p["gid"] == p["uid"] for p in reports)
    assert all(p["named"] == 1.0 for p in reports)
    assert any(p["others"] > 0 for p in reports)  # another trial's directory was there ...
    assert all(p["readable"] == 0 for p in reports)  # ... and none could be read
    assert all(p["listed"] == -1 for p in reports)  # nor the work directory listed
    # the two slots' trials ran side by side under two different accounts
    assert len({p["uid"] for p in reports}) >= 2
