"""The connection flags every command line shares: refused by name, before any connection."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tunefleet.connection import ENV_CA, ENV_INSECURE, add_connection_args, connection_from
from tunefleet.errors import InvalidInputError
from tunefleet.tls import CA_FILE, init_authority


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    return parser.parse_args(argv)


@pytest.fixture()
def ca_file(tmp_path: Path) -> Path:
    init_authority(tmp_path / "tls")
    return tmp_path / "tls" / CA_FILE


def test_insecure_with_a_ca_is_refused_rather_than_silently_tls(ca_file: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        connection_from(_parse(["--coordinator", "127.0.0.1:5", "--insecure", "--ca",
                                str(ca_file)]))
    assert "--insecure" in str(caught.value) and str(ca_file) in str(caught.value)


def test_the_environment_counts_as_the_flags(ca_file: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv(ENV_CA, str(ca_file))
    monkeypatch.setenv(ENV_INSECURE, "1")
    with pytest.raises(InvalidInputError, match=ENV_INSECURE):
        connection_from(_parse(["--coordinator", "127.0.0.1:5"]))


def test_each_alone_is_taken(ca_file: Path) -> None:
    _, tls = connection_from(_parse(["--coordinator", "127.0.0.1:5", "--ca", str(ca_file)]))
    assert tls.ca == ca_file and not tls.insecure
    _, plain = connection_from(_parse(["--coordinator", "127.0.0.1:5", "--insecure"]))
    assert plain.ca is None and plain.insecure
