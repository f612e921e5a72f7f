"""Train a small MLP on scikit-learn's digits data and report validation metrics each epoch.

Run it alone with:  tunefleet try train.py --param lr=0.01 --param hidden=64
"""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from tunefleet import trial

DEFAULTS = {
    "lr": 3e-3, "hidden": 64, "depth": 2, "dropout": 0.1, "weight_decay": 1e-4,
    "batch_size": 64, "activation": "relu",
}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_model(hidden: int, depth: int, dropout: float, activation: str) -> nn.Module:
    layers: list[nn.Module] = []
    width = 64
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def pick_device() -> torch.device:
    """The GPU the agent gave this trial, else the CPU. A trial given a GPU that torch cannot
    see fails at once rather than train on the CPU for the price of a GPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    given = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if trial.attached and given:
        raise RuntimeError(f"this trial was given GPU {given}, but torch {torch.__version__} "
                           "sees no CUDA device (a CPU-only torch, or the node's driver)")
    return torch.device("cpu")


def main() -> None:
    cfg = {**DEFAULTS, **trial.params}
    epochs = trial.max_step or 9
    device = pick_device()
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))  # the same split for every trial
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    cut = int(0.8 * len(x))
    x_train, y_train = x[:cut].to(device), y[:cut].to(device)
    x_val, y_val = x[cut:].to(device), y[cut:].to(device)

    torch.manual_seed(0)
    model = build_model(int(cfg["hidden"]), int(cfg["depth"]), float(cfg["dropout"]),
                        str(cfg["activation"])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]),
                                  weight_decay=float(cfg["weight_decay"]))
    loss_fn = nn.CrossEntropyLoss()
    batch = int(cfg["batch_size"])
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(x_train), generator=generator).split(batch):
            idx = idx.to(device)
            optimizer.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = loss_fn(logits, y_val).item()
            val_accuracy = (logits.argmax(1) == y_val).float().mean().item()
        trial.report(epoch, val_loss=val_loss, val_accuracy=val_accuracy)
        if trial.should_stop():
            break


if __name__ == "__main__":
    main()
