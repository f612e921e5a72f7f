"""Build the tabular learning-curve benchmark: train the digits MLP of the template for real.

Every configuration of a scrambled Sobol design (fixed seed) over the template's search space
(``client/templates/digits/study.toml``) is trained with the template's own model, data split,
optimiser and seeds (``client/templates/digits/train.py``) for ``--epochs`` epochs, in this
process, single-threaded. After every epoch it records the validation loss, the number of
correct validation predictions and the wall and CPU time of the epoch. Measure the cost first
with ``--time-one``: 4,096 configurations x 27 epochs took 28 CPU minutes on one core here.

The run is resumable: each finished configuration is appended as one JSON line to ``--work``
(``~/.cache/tunefleet/`` by default) and a restart skips those already there; a larger
``--configs`` later extends the same design, since it is a prefix of one Sobol sequence.
``--pack`` (also done at the end of a run) writes the compact table that the simulator reads::

    python scripts/make_digits_curves.py --time-one                     # cost estimate
    python scripts/make_digits_curves.py --configs 4096 --epochs 27      # resumable, prints progress
    python scripts/make_digits_curves.py --pack                         # table from the log

Table (``scripts/data/digits_curves.npz``): ``unit`` (n, 7) float32, the Sobol points in the
space's unit cube, in parameter order ``names``; ``params`` (n, 7) float32 (categoricals as
choice indices); ``val_loss`` (n, epochs) float16; ``val_correct`` (n, epochs) uint16 out of
``n_val``; ``epoch_seconds`` and ``epoch_cpu_seconds`` (n, epochs) float16, the wall and CPU
time of each epoch (the CPU time is the steadier cost on a shared machine); plus the space as
JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tunefleet.writable import unwritable_file as unwritable

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_TABLE = DATA / "digits_curves.npz"
# The resumable log stays out of the repository (a few tens of MB of JSON lines).
DEFAULT_WORK = Path.home() / ".cache" / "tunefleet" / "digits_curves.work.jsonl"
DESIGN_SEED = 20240607

# The template's [space] (client/templates/digits/study.toml), in its order.
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "depth": {"type": "int", "low": 1, "high": 3},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    "activation": {"type": "categorical", "choices": ["relu", "gelu", "tanh"]},
}


def design(n: int) -> np.ndarray:
    """The first ``n`` points of the fixed scrambled Sobol design in ``[0, 1]^7``."""
    from scipy.stats import qmc

    engine = qmc.Sobol(len(SPACE), scramble=True, seed=np.random.default_rng(DESIGN_SEED))
    m = max(1, math.ceil(math.log2(max(n, 2))))
    return np.asarray(engine.random_base2(m)[:n])


class Trainer:
    """The template's training loop, with the data loaded once."""

    def __init__(self) -> None:
        import torch
        from sklearn.datasets import load_digits
        from torch import nn

        sys.path.insert(0, str(ROOT))
        from client.templates.digits.train import build_model

        torch.set_num_threads(1)
        self.torch, self.nn, self.build_model = torch, nn, build_model
        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(x))  # the template's split
        xt = torch.tensor(x[order] / 16.0, dtype=torch.float32)
        yt = torch.tensor(y[order], dtype=torch.long)
        cut = int(0.8 * len(xt))
        self.x_train, self.y_train = xt[:cut], yt[:cut]
        self.x_val, self.y_val = xt[cut:], yt[cut:]

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    def run(self, cfg: dict[str, Any], epochs: int) -> dict[str, list[float]]:
        torch, nn = self.torch, self.nn
        torch.manual_seed(0)
        model = self.build_model(int(cfg["hidden"]), int(cfg["depth"]), float(cfg["dropout"]),
                                 str(cfg["activation"]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]),
                                      weight_decay=float(cfg["weight_decay"]))
        loss_fn = nn.CrossEntropyLoss()
        batch = int(cfg["batch_size"])
        generator = torch.Generator().manual_seed(0)
        out: dict[str, list[float]] = {
            "val_loss": [], "val_correct": [], "seconds": [], "cpu_seconds": []
        }
        for _ in range(epochs):
            started, cpu_started = time.perf_counter(), time.process_time()
            model.train()
            for idx in torch.randperm(len(self.x_train), generator=generator).split(batch):
                optimizer.zero_grad()
                loss_fn(model(self.x_train[idx]), self.y_train[idx]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                logits = model(self.x_val)
                val_loss = loss_fn(logits, self.y_val).item()
                correct = int((logits.argmax(1) == self.y_val).sum().item())
            out["val_loss"].append(val_loss if math.isfinite(val_loss) else 1e4)
            out["val_correct"].append(correct)
            out["seconds"].append(time.perf_counter() - started)
            out["cpu_seconds"].append(time.process_time() - cpu_started)
        return out


def load_work(path: Path) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            done[int(row["index"])] = row
    return done


def generate(n: int, epochs: int, work: Path) -> None:
    from tunefleet.space import SearchSpace

    space = SearchSpace.from_mapping(SPACE)
    points = design(n)
    done = load_work(work)
    stale = [i for i, r in done.items() if len(r["val_loss"]) != epochs]
    if stale:
        raise SystemExit(f"{work} holds runs of another length than --epochs {epochs}; "
                         f"pass that value or use another --work file")
    todo = [i for i in range(n) if i not in done]
    print(f"{len(done)} of {n} configurations done, {len(todo)} to go ({epochs} epochs each)",
          flush=True)
    trainer = Trainer()
    work.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with work.open("a") as log:
        for k, i in enumerate(todo, 1):
            cfg = space.from_unit(points[i])
            result = trainer.run(cfg, epochs)
            log.write(json.dumps({"index": i, "params": cfg, **result}) + "\n")
            log.flush()
            if k % 25 == 0 or k == len(todo):
                spent = time.perf_counter() - started
                left = spent / k * (len(todo) - k)
                print(f"{len(done) + k}/{n} configurations, {spent / 60:.1f} min spent, "
                      f"~{left / 60:.1f} min left, {spent / k:.2f} s per configuration",
                      flush=True)


def pack(work: Path, out: Path) -> None:
    from tunefleet.space import CategoricalParam, SearchSpace

    space = SearchSpace.from_mapping(SPACE)
    done = load_work(work)
    n = 0
    while n in done:  # a prefix of the design, so the table stays a Sobol design
        n += 1
    if n == 0:
        raise SystemExit(f"{work}: no finished configuration to pack")
    rows = [done[i] for i in range(n)]
    names = list(space)
    params = np.array([
        [space[p].index(r["params"][p]) if isinstance(space[p], CategoricalParam)
         else float(r["params"][p]) for p in names]
        for r in rows
    ], dtype=np.float32)
    unit = np.array([space.to_unit(r["params"]) for r in rows], dtype=np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        names=np.array(names),
        space=np.array(json.dumps(SPACE)),
        unit=unit,
        params=params,
        val_loss=np.array([r["val_loss"] for r in rows], dtype=np.float16),
        val_correct=np.array([r["val_correct"] for r in rows], dtype=np.uint16),
        epoch_seconds=np.array([r["seconds"] for r in rows], dtype=np.float16),
        epoch_cpu_seconds=np.array([r["cpu_seconds"] for r in rows], dtype=np.float16),
        n_val=np.array(Trainer().n_val),
    )
    wall = sum(sum(r["seconds"]) for r in rows)
    cpu = sum(sum(r["cpu_seconds"]) for r in rows)
    print(f"wrote {out}: {n} configurations x {len(rows[0]['val_loss'])} epochs, "
          f"{out.stat().st_size / 1e6:.2f} MB; training took {cpu / 60:.1f} CPU minutes "
          f"({wall / 60:.1f} minutes of wall time)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after the help of the options that take a value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any work (no training, no file touched): a bad value
    exits 2 with a message naming the option, the value and what is allowed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--configs", type=int, default=4096,
                        help="size of the Sobol design, at least 1 (ignored by --pack)")
    parser.add_argument("--epochs", type=int, default=27,
                        help="the maximum fidelity, at least 1 (ignored by --pack)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help="resumable log of finished configurations (JSON lines)")
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE,
                        help="the packed table, a path ending in .npz; the default is the "
                             "committed table that the simulator reads, which a run or --pack "
                             "overwrites")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pack", action="store_true",
                      help="only pack the log into the table (no training)")
    mode.add_argument("--time-one", action="store_true",
                      help="time a few configurations and estimate the cost of the design; "
                           "writes nothing")
    args = parser.parse_args(argv)
    if args.configs < 1:
        parser.error(f"--configs: got {args.configs}; must be >= 1")
    if args.epochs < 1:
        parser.error(f"--epochs: got {args.epochs}; must be >= 1")
    if args.time_one:
        return args
    # np.savez_compressed would append .npz to any other name, and the table be elsewhere
    if args.out.suffix != ".npz":
        parser.error(f"--out: got {str(args.out)!r}; a path ending in .npz")
    writes = [("--out", args.out)] + ([] if args.pack else [("--work", args.work)])
    for option, path in writes:
        why = unwritable(path)
        if why is not None:
            parser.error(f"{option}: got {str(path)!r}, which {why}; give a writable file path")
    if args.pack and not args.work.is_file():
        parser.error(f"--work: got {str(args.work)!r}, which does not exist; --pack packs a log "
                     "that a run without --pack wrote")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.time_one:
        from tunefleet.space import SearchSpace

        space = SearchSpace.from_mapping(SPACE)
        trainer = Trainer()
        points = design(args.configs)
        sample = points[:: max(1, len(points) // 16)][:16]
        started = time.perf_counter()
        for p in sample:
            trainer.run(space.from_unit(p), args.epochs)
        each = (time.perf_counter() - started) / len(sample)
        print(f"{each:.2f} s per configuration of {args.epochs} epochs; "
              f"{args.configs} configurations: ~{each * args.configs / 60:.0f} min")
        return
    if not args.pack:
        generate(args.configs, args.epochs, args.work)
    pack(args.work, args.out)


if __name__ == "__main__":
    main()
