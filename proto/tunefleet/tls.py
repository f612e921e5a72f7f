"""TLS for every channel: a one-command local certificate authority, and credentials.

:func:`init_authority` writes, into one directory, a CA (``ca.pem``, ``ca.key``), a server
certificate signed by it (``server.pem``, ``server.key``) for the given host names and
addresses, and the operator's Ed25519 key (``operator.key``). Agents and clients pin ``ca.pem``:
they trust that CA only, not the system's. :func:`open_channel` is the one way every tunefleet
client opens a channel: TLS with a pinned CA, or plaintext only when asked explicitly.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tunefleet.errors import InvalidInputError, TunefleetError
from tunefleet.keys import Identity, load_or_create

__all__ = [
    "init_authority",
    "server_credentials",
    "open_channel",
    "ChannelSecurity",
    "CA_FILE",
    "DEFAULT_HOSTS",
]

CA_FILE, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
OPERATOR_KEY = "operator.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def init_authority(directory: Path, hosts: list[str] | None = None) -> Identity:
    """Create the CA, the server certificate and the operator key in ``directory``.

    Refuses to overwrite an existing CA. ``hosts`` are the names and addresses agents and
    clients will dial (loopback and this machine's hostname are always included). Returns the
    operator identity.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / CA_FILE).exists():
        raise TunefleetError(f"{directory / CA_FILE} exists already; use another --dir")
    names = list(dict.fromkeys([*DEFAULT_HOSTS, socket.gethostname(), *(hosts or [])]))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunefleet local CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _pem_key(ca_key))
    _write_private(directory / SERVER_KEY, _pem_key(server_key))
    (directory / SERVER_CERT).write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (directory / CA_FILE).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    operator, _ = load_or_create(directory / OPERATOR_KEY)
    return operator


def server_credentials(directory: Path) -> grpc.ServerCredentials:
    """The coordinator's TLS credentials from a directory made by :func:`init_authority`."""
    try:
        key = (directory / SERVER_KEY).read_bytes()
        cert = (directory / SERVER_CERT).read_bytes()
    except OSError:
        raise TunefleetError(
            f"no TLS certificate in {directory}: run `coordinator init --dir {directory}` "
            "(or serve plaintext with --insecure, for local development only)"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


@dataclass(frozen=True)
class ChannelSecurity:
    """How a client reaches the coordinator: TLS pinned to ``ca`` or, explicitly, plaintext."""

    ca: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.ca is None and not self.insecure:
            raise InvalidInputError(
                "--ca", None,
                "give the coordinator's CA certificate (ca.pem from `coordinator init`), "
                "or --insecure for a plaintext local coordinator",
            )
        if self.ca is not None and self.insecure:
            raise InvalidInputError("--insecure", True, "cannot be combined with --ca")
        if self.ca is not None and not self.ca.is_file():
            raise InvalidInputError("--ca", str(self.ca), "must be a readable PEM file")
        if self.ca is not None:
            try:  # else every connection fails later, in a loop, with gRPC's own words
                x509.load_pem_x509_certificates(self.ca.read_bytes())
            except (ValueError, OSError):
                raise InvalidInputError("--ca", str(self.ca), "must hold a PEM certificate (the "
                                        "ca.pem `coordinator init` writes)") from None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())


CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def open_channel(address: str, security: ChannelSecurity, aio: bool = False) -> Any:
    """A gRPC channel (``grpc.aio`` when ``aio``) to ``address`` with the given security."""
    credentials = security.credentials()
    if aio:
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
    if credentials is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
