"""Whether a file or folder can be written where a command was told to, checked before any of
its work and without creating anything."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["uncreatable", "unwritable_file", "unwritable_folder"]


def uncreatable(path: Path) -> str | None:
    """Why ``path``, which does not exist, could not be created with its missing folders (the
    nearest existing ancestor must be a folder this user can write to), or ``None``."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: the folder {parent} is not writable"
    return None


def unwritable_file(path: Path) -> str | None:
    """Why a file cannot be written at ``path`` (its missing folders made), or ``None``."""
    if path.is_dir():
        return "is a folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else "is not writable"
    return uncreatable(path)


def unwritable_folder(path: Path) -> str | None:
    """Why files cannot be written in a folder at ``path`` (made if missing), or ``None``."""
    if path.exists():
        if not path.is_dir():
            return "is a file"
        return None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
    return uncreatable(path)
