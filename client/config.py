"""Where the researcher's key lives and which coordinator to talk to."""

from __future__ import annotations

import os
from pathlib import Path

from tunefleet.keys import Identity, load_or_create

__all__ = ["ENV_HOME", "ENV_COORDINATOR", "home", "key_path", "researcher_identity"]

ENV_HOME = "TUNEFLEET_HOME"
ENV_COORDINATOR = "TUNEFLEET_COORDINATOR"


def home() -> Path:
    return Path(os.environ.get(ENV_HOME, Path.home() / ".tunefleet"))


def key_path() -> Path:
    return home() / "researcher.key"


def researcher_identity() -> tuple[Identity, bool]:
    """The researcher's key, created (mode 0600) on first use. Returns ``(identity, created)``."""
    return load_or_create(key_path())
