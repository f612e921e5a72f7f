"""Whether the packages that trials import have compiled bytecode.

A trial cannot write bytecode for the provider's packages (its account does not own them, and
the agent sets ``PYTHONDONTWRITEBYTECODE``), so a package installed without it (``uv`` does not
compile by default; some images ship without ``__pycache__``) is compiled from source by every
trial: on a lent H100 machine ``import torch`` took 4.7-7.0 s before ``python -m compileall``
and 2.3-2.5 s after. The agent checks at start and tells the provider the command that fixes it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["uncompiled_packages", "compile_advice"]


def uncompiled_packages(names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """The installed top-level packages among ``names`` whose ``__init__`` has no bytecode.

    Nothing is imported; a name that is not installed, or not a source package (a built-in or
    an extension module), is skipped. Returns ``(name, the directory holding the package)``.
    """
    found: list[tuple[str, Path]] = []
    for name in dict.fromkeys(n.split(".")[0] for n in names):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        if not Path(importlib.util.cache_from_source(spec.origin)).exists():
            origin = Path(spec.origin)  # a package's __init__.py, or a single-file module
            found.append((name, origin.parent.parent if origin.name == "__init__.py"
                          else origin.parent))
    return found


def compile_advice(names: tuple[str, ...], python: str) -> list[str]:
    """One line per directory holding uncompiled packages among ``names``: what to run."""
    by_dir: dict[Path, list[str]] = {}
    for name, directory in uncompiled_packages(names):
        by_dir.setdefault(directory, []).append(name)
    return [
        f"note: {', '.join(found)} in {directory} {'has' if len(found) == 1 else 'have'} no "
        "compiled bytecode, so every trial compiles it from source (seconds per trial); "
        f"compile once with: {python} -m compileall -q -j 0 {directory}"
        for directory, found in by_dir.items()
    ]
