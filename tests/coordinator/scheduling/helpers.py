"""Helpers shared by the scheduling tests."""

from __future__ import annotations

import math


def toy_loss(params: dict, step: int) -> float:
    """A smooth loss of the mixed space that decreases with ``step``."""
    lr = math.log10(float(params["lr"]))
    act = {"relu": 0.0, "gelu": 0.1, "tanh": 0.3}[str(params["activation"])]
    final = (lr + 2.5) ** 2 + (float(params["dropout"]) - 0.2) ** 2 + act
    final += 0.1 * abs(math.log2(int(params["hidden"]) / 64))
    return final + 1.0 / step
