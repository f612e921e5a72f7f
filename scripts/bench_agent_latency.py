#!/usr/bin/env python
"""Agent latency: from the lease of a trial to its first reported step.

    python scripts/bench_agent_latency.py --trials 8

Starts a real coordinator and one real agent (TLS, sandboxed children), runs a study whose
entrypoint reports step 1 at once, and reads from the coordinator's database, for every
attempt, the time from the attempt's start (the lease) to the arrival of its first report.
The first attempt also downloads, verifies and unpacks the bundle; later ones find it in the
agent's cache. Three entrypoints are measured side by side: one that only imports the trial
API, one that imports torch first, and one that also builds an optimizer and takes a step
before its first report, as real training code does (building the first optimizer imports
``torch._dynamo``). DESIGN's target is 0.5 s "with
a warm runtime": ``--preload torch`` gives the agent warm runtimes (one waiting interpreter
per slot that has imported torch), to compare with a fresh interpreter per trial. The very
first trial may find its warm runtime still importing (the agent has just started).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from client.local import LocalCluster
from client.sdk import Client
from tunefleet.keys import Identity

STUDY = """name = "latency-{kind}"
[objective]
metric = "loss"
[budget]
max_trials = {trials}
[search]
searcher = "random"
scheduler = "fifo"
[fidelity]
min = 1
max = 1
[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
[verification]
best = false
"""

# Each trial reports step 1 at once, then "trains" for a while (sleeps), as a real one would:
# that is when an agent with warm runtimes gets the slot's next one ready.
ENTRYPOINTS = {
    "bare": "import time\nfrom tunefleet import trial\ntrial.report(1, loss=trial.params['x'])\n"
            "time.sleep({settle})\n",
    "torch": "import time\nimport torch  # noqa: F401\nfrom tunefleet import trial\n"
             "trial.report(1, loss=trial.params['x'])\ntime.sleep({settle})\n",
    # as training code does before its first step: an optimizer (which imports torch._dynamo)
    "optim": "import time\nimport torch\nfrom tunefleet import trial\n"
             "w = torch.zeros(4, requires_grad=True)\n"
             "torch.optim.AdamW([w], lr=1e-3).step()\n"
             "trial.report(1, loss=trial.params['x'])\ntime.sleep({settle})\n",
}


def measure(cluster: LocalCluster, client: Client, root: Path, kind: str, trials: int,
            settle: float) -> list[float]:
    """Lease-to-first-report seconds of each attempt of a fresh study, in lease order."""
    directory = root / kind
    directory.mkdir()
    (directory / "train.py").write_text(ENTRYPOINTS[kind].format(settle=settle))
    (directory / "study.toml").write_text(STUDY.format(kind=kind, trials=trials))
    study_id = client.submit_file(directory / "study.toml")
    deadline = time.monotonic() + 60 + (10 + settle) * trials
    while not client.status(study_id).finished:
        if time.monotonic() > deadline:
            raise SystemExit(f"study {study_id} did not finish in time")
        time.sleep(0.2)
    with sqlite3.connect(cluster.db_path) as db:
        rows = db.execute(
            "SELECT a.started_at, MIN(r.received_at) FROM attempts a JOIN reports r "
            "ON r.attempt_id = a.id WHERE a.study_id = ? GROUP BY a.id ORDER BY a.started_at",
            (study_id,),
        ).fetchall()
    return [received - started for started, received in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per entrypoint (>= 2)")
    parser.add_argument("--settle", type=float, default=1.5,
                        help="seconds each trial runs after its first report (default: 1.5)")
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE",
                        help="the agent's --preload (warm runtimes; repeatable)")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error(f"--trials: got {args.trials}; must be >= 2 (the first one is cold)")
    with tempfile.TemporaryDirectory(prefix="tunefleet-latency-") as tmp, \
            LocalCluster(agents=1, state_dir=Path(tmp) / "cluster",
                         agent_args=[a for m in args.preload for a in ("--preload", m)]
                         ) as cluster:
        identity = Identity.generate()
        with Client(cluster.address, identity, cluster.security) as client:
            warm = f"warm runtimes preloading {', '.join(args.preload)}" if args.preload \
                else "no warm runtime"
            print(f"lease to first report, one agent, {warm}, {args.trials} trials each "
                  "(seconds; the first attempt fetches the bundle)")
            for kind in ENTRYPOINTS:
                seconds = measure(cluster, client, Path(tmp), kind, args.trials, args.settle)
                cached = seconds[1:]
                print(f"  {kind:6} first {seconds[0]:.3f}  cached: median "
                      f"{statistics.median(cached):.3f}  min {min(cached):.3f}  "
                      f"max {max(cached):.3f}  (n={len(cached)})")
            print("  target (DESIGN, warm runtime): 0.5")


if __name__ == "__main__":
    main()
