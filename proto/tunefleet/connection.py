"""The connection flags every tunefleet command line shares: where the coordinator is and how
to reach it securely (``--coordinator``, ``--ca``, ``--insecure`` and their environment
variables)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunefleet.errors import InvalidInputError
from tunefleet.tls import ChannelSecurity

__all__ = ["ENV_COORDINATOR", "ENV_CA", "ENV_INSECURE", "add_connection_args", "connection_from"]

ENV_COORDINATOR = "TUNEFLEET_COORDINATOR"
ENV_CA = "TUNEFLEET_CA"
ENV_INSECURE = "TUNEFLEET_INSECURE"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default=os.environ.get(ENV_COORDINATOR),
                        help=f"coordinator HOST:PORT (default: ${ENV_COORDINATOR})")
    parser.add_argument("--ca", type=Path, default=os.environ.get(ENV_CA) or None,
                        help="the coordinator's CA certificate, ca.pem from `coordinator init` "
                        f"(default: ${ENV_CA}); the connection trusts this CA only")
    parser.add_argument("--insecure", action="store_true",
                        default=os.environ.get(ENV_INSECURE, "") not in ("", "0"),
                        help=f"plaintext, for a local development coordinator (or ${ENV_INSECURE}=1)")


def connection_from(args: argparse.Namespace) -> tuple[str, ChannelSecurity]:
    """The address and channel security the flags give; :class:`InvalidInputError` if unusable."""
    if not args.coordinator:
        raise InvalidInputError("--coordinator", None,
                                f"is required: HOST:PORT (or set ${ENV_COORDINATOR})")
    host, sep, port = str(args.coordinator).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError("--coordinator", args.coordinator, "must look like HOST:PORT")
    ca = Path(args.ca) if args.ca else None
    if args.insecure and ca is not None:  # which one was meant is a guess: refuse both
        raise InvalidInputError(
            "--insecure", True, f"given with --ca {ca} (the flags or ${ENV_INSECURE} and "
            f"${ENV_CA}); use --ca for a TLS coordinator or --insecure for a plaintext one")
    return args.coordinator, ChannelSecurity(ca=ca, insecure=bool(args.insecure))
