"""Checks of the files a script will write, made before any of its work."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["unwritable"]


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its missing folders created), or ``None``.

    Checks without creating anything: ``path`` must not be a folder, an existing file must be
    writable, and the nearest existing ancestor must be a writable folder.
    """
    if path.is_dir():
        return "is a folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else "is not writable"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: the folder {parent} is not writable"
    return None
