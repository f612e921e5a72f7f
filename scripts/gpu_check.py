#!/usr/bin/env python
"""Check a machine with NVIDIA GPUs end to end, through a real coordinator and real agents.

    python scripts/gpu_check.py --out DIR

Run it where tunefleet is installed (``pip install .``) beside a CUDA build of torch, as the
provider who runs ``node-agent`` would (as root every trial then runs in an account of its own).
It prints one ``PASS`` or ``FAIL`` line per check and exits 1 when any check failed:

1. inventory: what NVML gives the agent (UUID, name, memory, compute capability) against
   ``nvidia-smi``;
2. template: the ``tunefleet init`` study with ``gpus = 1``, run by ``tunefleet run --local 1``
   (its ``train.py`` fails a trial that was given a GPU it cannot see);
3. load: a trial that keeps the GPU busy (bf16 matrix products), with NVML sampled while it
   runs: the GPU's utilization, and which processes hold GPU memory under which user id;
4. warm: an agent with ``--preload torch`` runs CUDA trials in its warm runtimes, and the lease
   to first report is read from the coordinator's database.

The load check also asks that an agent offering GPUs preloads torch without being told, and
that the GPU use the agent measured for each trial (``tunefleet trials``) came back.

``--cpu`` runs the same steps without a GPU (the trials on CPU slots, NVML checks skipped), to
check the script itself on a machine without one. Logs and the state directories go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.local import LocalCluster
from client.sdk import Client
from tunefleet.keys import Identity

RESULTS: list[tuple[str, bool, str]] = []

LOAD_STUDY = """name = "gpu-load"
[objective]
metric = "loss"
[budget]
max_trials = {trials}
[search]
searcher = "random"
scheduler = "fifo"
[fidelity]
min = 1
max = {steps}
[space]
lr = {{ type = "float", low = 1e-4, high = 1e-2, log = true }}
[verification]
best = false
[resources]
gpus = {gpus}
min_gpu_memory_gb = {memory}
"""

# A trial that keeps one GPU busy: a 4-layer 4096-wide MLP in bf16 autocast on a fixed random
# regression task, ~30 optimizer steps per reported step. It reports what it saw of the device.
LOAD_TRAIN = """import os, sys, time
preloaded = float("torch" in sys.modules)
import torch
from tunefleet import trial
device = torch.device("{device}")
torch.manual_seed(0)
width, batch, inner = {width}, {batch}, {inner}
model = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(width, width),
                                                           torch.nn.ReLU())]).to(device)
x = torch.randn(batch, width, device=device)
y = torch.randn(batch, width, device=device) * 0.1
opt = torch.optim.SGD(model.parameters(), lr=trial.params["lr"])
for step in range(1, (trial.max_step or 4) + 1):
    for _ in range(inner):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    trial.report(step, loss=loss.item(), uid=float(os.getuid()), preloaded=preloaded,
                 devices=float(torch.cuda.device_count()),
                 on_cuda=float(next(model.parameters()).is_cuda),
                 memory_gb=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
                 else 0.0)
    if trial.should_stop():
        break
"""


def check(name: str) -> Callable[[Callable[..., str]], Callable[..., None]]:
    """Record a check: it returns a one-line detail, or raises to fail."""
    def wrap(fn: Callable[..., str]) -> Callable[..., None]:
        def run(*args: Any) -> None:
            began = time.monotonic()
            try:
                detail = fn(*args)
                ok = True
            except Exception as exc:  # a failed check is reported; the next one still runs
                detail = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                ok = False
            RESULTS.append((name, ok, detail))
            print(f"{'PASS' if ok else 'FAIL'} {name} ({time.monotonic() - began:.1f} s): {detail}",
                  flush=True)
        return run
    return wrap


def need(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def nvidia_smi() -> list[dict[str, str]]:
    fields = ["index", "uuid", "name", "memory.total", "compute_cap"]
    text = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(fields, (v.strip() for v in line.split(",")), strict=True))
            for line in text.strip().splitlines()]


@check("inventory: NVML through the agent matches nvidia-smi")
def check_inventory(out: Path) -> str:
    from node_agent.inventory import read_inventory

    result = read_inventory()
    cli = subprocess.run([sys.executable, "-m", "node_agent", "inventory"], capture_output=True,
                         text=True, timeout=60)
    (out / "inventory.txt").write_text(cli.stdout + cli.stderr)
    print(cli.stdout, end="")
    smi = nvidia_smi()
    gpus = list(result.inventory.gpus)
    need(len(gpus) == len(smi) > 0, f"NVML gave {len(gpus)} GPU(s), nvidia-smi {len(smi)}")
    for gpu, row in zip(gpus, smi, strict=True):
        need(gpu.uuid == row["uuid"], f"uuid {gpu.uuid} != {row['uuid']}")
        need(gpu.name == row["name"], f"name {gpu.name!r} != {row['name']!r}")
        mib = float(row["memory.total"])
        need(abs(gpu.memory_total_gb * 1024 - mib) <= 0.01 * mib,
             f"memory {gpu.memory_total_gb:.2f} GiB != {mib} MiB")
        need(gpu.compute_capability == row["compute_cap"],
             f"compute capability {gpu.compute_capability} != {row['compute_cap']}")
    need(result.inventory.cpu_slots == 0, f"{result.inventory.cpu_slots} CPU slots beside GPUs")
    return result.note + "; " + ", ".join(f"{g.name} {g.memory_total_gb:.1f} GiB "
                                          f"sm_{g.compute_capability}" for g in gpus)


@check("template: tunefleet run --local 1 with gpus = 1 trains on CUDA")
def check_template(out: Path, cpu: bool) -> str:
    home, study = out / "template-home", out / "template-study"
    for old in (home, study, out / "template-state"):
        shutil.rmtree(old, ignore_errors=True)
    env = {**os.environ, "TUNEFLEET_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "client", "init", str(study)], env=env, check=True,
                   capture_output=True, timeout=60)
    # the template's pick_device() fails a trial that was given a GPU it cannot see
    need("device = pick_device()" in (study / "train.py").read_text(),
         "the template no longer picks its device with pick_device(); update this check")
    toml = (study / "study.toml").read_text()
    toml = toml.replace("max_trials = 16", "max_trials = 8")
    if not cpu:
        toml = toml.replace("gpus = 0 ", "gpus = 1 ").replace("min_gpu_memory_gb = 0",
                                                                "min_gpu_memory_gb = 4")
    (study / "study.toml").write_text(toml)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "client", "run", str(study / "study.toml"), "--local", "1",
         "--json", "--state-dir", str(out / "template-state")],
        env=env, capture_output=True, text=True, timeout=400)
    wall = time.monotonic() - began
    (out / "template.log").write_text(done.stdout + "\n--- stderr\n" + done.stderr)
    need(done.returncode == 0, f"exit {done.returncode}: {done.stderr.strip()[-400:]}")
    best = json.loads(done.stdout)  # with --json stdout holds the JSON only
    with sqlite3.connect(out / "template-state" / "coordinator.db") as db:
        rows = db.execute("SELECT state, gpu_seconds, wall_seconds FROM attempts "
                          "WHERE purpose = 'trial'").fetchall()
    need(all(state in ("completed", "pruned") for state, _, _ in rows),
         f"attempt states {sorted({r[0] for r in rows})}")
    gpu_seconds = sum(r[1] or 0.0 for r in rows)
    need(cpu or gpu_seconds > 0, "no GPU-seconds were recorded")
    value = best["value"]
    return (f"{len(rows)} attempts in {wall:.0f} s, best val_loss {value}, "
            f"{gpu_seconds:.1f} GPU-seconds recorded")


class Sampler:
    """Samples NVML every 0.1 s: GPU utilization, and the processes holding GPU memory."""

    def __init__(self) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.utilization: list[int] = []
        self.processes: dict[int, tuple[int, float]] = {}  # pid: (uid, most GiB seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        nvml = self.nvml
        while not self._stop.wait(0.1):
            self.utilization.append(nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    uid = int(next(line.split()[1] for line in status.splitlines()
                                   if line.startswith("Uid:")))
                except (OSError, StopIteration):
                    uid = -1
                used = (proc.usedGpuMemory or 0) / 2**30
                old = self.processes.get(proc.pid, (uid, 0.0))
                self.processes[proc.pid] = (uid, max(old[1], used))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.nvml.nvmlShutdown()


def run_load_study(out: Path, name: str, cpu: bool, trials: int, steps: int,
                   agent_args: list[str]) -> tuple[list[Any], list[float], Path, Path]:
    """Run the GPU-load study on one agent; return the trials, lease-to-first-report seconds,
    the study's folder and the coordinator's database."""
    root = out / name
    shutil.rmtree(root, ignore_errors=True)
    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    width, batch, inner = (256, 256, 2) if cpu else (4096, 8192, 100)
    (bundle / "train.py").write_text(LOAD_TRAIN.format(
        device="cpu" if cpu else "cuda", width=width, batch=batch, inner=inner))
    (bundle / "study.toml").write_text(LOAD_STUDY.format(
        trials=trials, steps=steps, gpus=0 if cpu else 1, memory=0 if cpu else 4))
    with LocalCluster(agents=1, state_dir=root / "cluster", slots_per_agent=1 if cpu else 0,
                      agent_args=agent_args) as cluster, \
            Client(cluster.address, Identity.generate(), cluster.security) as client:
        study_id = client.submit_file(bundle / "study.toml")
        deadline = time.monotonic() + 240
        while not client.status(study_id).finished:
            need(time.monotonic() < deadline, "the study did not finish in 240 s")
            time.sleep(0.2)
        results = client.trials(study_id, include_reports=True)
        with sqlite3.connect(cluster.db_path) as db:
            rows = db.execute(
                "SELECT a.started_at, MIN(r.received_at) FROM attempts a JOIN reports r "
                "ON r.attempt_id = a.id WHERE a.study_id = ? GROUP BY a.id ORDER BY a.started_at",
                (study_id,)).fetchall()
    latency = [received - started for started, received in rows]
    return results, latency, root, Path(cluster.db_path)


def trial_facts(results: list[Any], cpu: bool, steps: int) -> tuple[set[float], str]:
    need(bool(results) and all(t.state == "completed" for t in results),
         "trial states " + ", ".join(f"{t.trial_id}:{t.state} {t.error.strip()[-300:]}"
                                     for t in results))
    reports = [p for t in results for p in t.reports]
    need(all(len(t.reports) == steps for t in results), "a trial missed reports")
    if not cpu:
        need(all(p["on_cuda"] == 1.0 for p in reports), "a trial trained off the GPU")
        need(all(p["devices"] == 1.0 for p in reports), "a trial saw other than one GPU")
    uids = {p["uid"] for p in reports}
    memory = max(p["memory_gb"] for p in reports)
    return uids, f"trial uids {sorted(int(u) for u in uids)}, peak torch memory {memory:.1f} GiB"


@check("load: a CUDA trial in a sandbox account keeps the GPU busy, and the agent measures it")
def check_load(out: Path, cpu: bool) -> str:
    sampler = None if cpu else Sampler()
    try:
        results, latency, root, db = run_load_study(out, "load", cpu, trials=2, steps=6,
                                                    agent_args=[])
    finally:
        if sampler is not None:
            sampler.stop()
    uids, facts = trial_facts(results, cpu, 6)
    if os.geteuid() == 0:
        need(0 not in uids, "a trial ran as root")
        need(len(uids) == len(results), f"trials shared a uid: {sorted(uids)}")
    if sampler is None:
        return facts
    # an agent offering GPUs preloads torch (and torch._dynamo) without being told
    log = (root / "cluster" / "agent-0.log").read_text()
    need("warm runtimes: one per slot, preloading torch, torch._dynamo" in log,
         "the GPU agent did not preload torch by default")
    # the agent's own NVML samples of each trial (per-trial GPU use) came with its end
    measured = [(t.gpu_utilization, t.gpu_memory_peak_gb) for t in results]
    need(all(u is not None and u > 5 for u, _ in measured),  # start-up idles it a while
         f"the agent measured GPU use {measured}; expected some for each busy trial")
    facts += f"; the agent measured (utilization %, peak GiB) {measured}"
    # the operator's view: coordinator nodes shows the node's mean GPU use of its last trials
    nodes = json.loads(subprocess.run(
        [sys.executable, "-m", "coordinator", "nodes", "--db", str(db), "--json"],
        capture_output=True, text=True, check=True, timeout=60).stdout)
    use = [n.get("gpu_utilization") for n in nodes]
    need(len(use) == 1 and use[0] is not None and use[0] > 5,
         f"coordinator nodes shows GPU use {use}; expected the node's measured use")
    facts += f"; coordinator nodes: mean GPU use {use[0]:.0f}%"
    busy = [u for u in sampler.utilization if u > 0]
    need(bool(busy), "NVML never saw the GPU busy")
    top = max(sampler.utilization)
    need(top >= 50, f"GPU utilization peaked at {top}%")
    holders = {pid: v for pid, v in sampler.processes.items()}
    need(any(uid in uids for uid, _ in holders.values()),
         f"no GPU process ran as a trial's uid: {holders}")
    (out / "load-utilization.json").write_text(json.dumps(
        {"utilization": sampler.utilization, "processes": holders}))
    return (f"{facts}; GPU utilization peak {top}%, median while busy "
            f"{statistics.median(busy):.0f}% over {len(busy)} samples; GPU processes "
            f"(pid: uid, GiB) {holders}; lease to first report {', '.join(f'{s:.2f}' for s in latency)} s")


@check("warm: --preload torch runs CUDA trials in warm runtimes")
def check_warm(out: Path, cpu: bool) -> str:
    results, latency, root, _ = run_load_study(out, "warm", cpu, trials=4, steps=2,
                                            agent_args=["--preload", "torch"])
    _, facts = trial_facts(results, cpu, 2)
    reports = [p for t in results for p in t.reports]
    warm = sum(1 for t in results if t.reports[0]["preloaded"] == 1.0)
    need(warm >= len(results) - 1, f"only {warm} of {len(results)} trials ran warm")
    log = (root / "cluster" / "agent-0.log").read_text()
    need("warm runtimes: one per slot, preloading torch" in log, "the agent did not preload")
    return (f"{warm}/{len(results)} trials warm, {len(reports)} reports; {facts}; lease to first "
            f"report (s): {', '.join(f'{s:.2f}' for s in latency)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for logs and state")
    parser.add_argument("--cpu", action="store_true",
                        help="check the script on a machine without a GPU (NVML checks skipped)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA available "
          f"{torch.cuda.is_available()}, euid {os.geteuid()}", flush=True)
    if not args.cpu:
        check_inventory(args.out)
    check_template(args.out, args.cpu)
    check_load(args.out, args.cpu)
    check_warm(args.out, args.cpu)
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
