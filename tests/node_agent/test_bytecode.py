"""The agent's check that the packages trials import have compiled bytecode (real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.bytecode import compile_advice, uncompiled_packages


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path holding the source package ``tf_uncompiled_pkg``."""
    package = tmp_path / "site" / "tf_uncompiled_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "heavy.py").write_text("WEIGHT = 2\n")
    (tmp_path / "site" / "tf_uncompiled_mod.py").write_text("ONE = 1\n")  # a single file
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tmp_path / "site"


def test_a_package_without_bytecode_is_found_and_the_advice_fixes_it(site: Path) -> None:
    assert uncompiled_packages(("tf_uncompiled_pkg.heavy",)) == [("tf_uncompiled_pkg", site)]
    [line] = compile_advice(("tf_uncompiled_pkg",), sys.executable)
    assert "tf_uncompiled_pkg" in line and str(site) in line and "has no compiled bytecode" in line
    command = line.split("compile once with: ", 1)[1].split()
    subprocess.run(command, check=True, timeout=120)  # the very command the provider is shown
    assert uncompiled_packages(("tf_uncompiled_pkg",)) == []
    assert "tf_uncompiled_pkg" not in sys.modules  # checking imported nothing


def test_a_single_file_module_is_compiled_where_it_lies(site: Path) -> None:
    assert uncompiled_packages(("tf_uncompiled_mod",)) == [("tf_uncompiled_mod", site)]
    [line] = compile_advice(("tf_uncompiled_mod",), sys.executable)
    subprocess.run(line.split("compile once with: ", 1)[1].split(), check=True, timeout=120)
    assert uncompiled_packages(("tf_uncompiled_mod",)) == []


def test_missing_built_in_and_compiled_packages_give_no_advice() -> None:
    assert uncompiled_packages(("tf_no_such_package", "sys", "json", "")) == []
    assert compile_advice(("json",), sys.executable) == []  # the standard library is compiled
