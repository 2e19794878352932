"""TLS on the public Studio API.

The main public port (API-key clients) serves server-only TLS when STUDIO_PUBLIC_TLS=on, with
STUDIO_PUBLIC_TLS_CERT_FILE and STUDIO_PUBLIC_TLS_KEY_FILE (the public certificate and its key); no
client certificate is asked for. Off (the default, the embedded stack) it is plaintext.

A second public port serves server-to-server integrations that authenticate with a client
certificate instead of an API key (mutual TLS). Set STUDIO_PUBLIC_MTLS_LISTEN (e.g. 0.0.0.0:50443)
with the same certificate files and STUDIO_PUBLIC_TLS_CLIENT_CA_FILE (the CA that signs integrations'
client certificates). On that port every client must present a certificate from that CA; its common
name is mapped to a tenant (`studio tenants set TENANT --add-cert-identity CN`).

A separate port because gRPC Python's TLS either requires client certificates or never asks for
them: API-key clients and certificate clients cannot share one TLS port."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from services.common.cert_renewals import CertificateRenewals

TLS_ENV = "STUDIO_PUBLIC_TLS"
LISTEN_ENV = "STUDIO_PUBLIC_MTLS_LISTEN"
CERT_ENV, KEY_ENV, CLIENT_CA_ENV = (
    "STUDIO_PUBLIC_TLS_CERT_FILE", "STUDIO_PUBLIC_TLS_KEY_FILE", "STUDIO_PUBLIC_TLS_CLIENT_CA_FILE",
)


def public_server_credentials() -> grpc.ServerCredentials | None:
    """Server-only TLS for the main public port when STUDIO_PUBLIC_TLS=on; None: plaintext. A renewed
    certificate (new files at the same paths) is served from the next connection on."""
    setting = os.environ.get(TLS_ENV, "").strip().lower()
    if setting in ("", "off"):
        return None
    if setting != "on":  # a typo must not quietly leave the public port in plaintext
        raise RuntimeError(f"{TLS_ENV} must be 'on' or 'off', not {setting!r}")
    cert, key = _readable_files(f"{TLS_ENV}=on", CERT_ENV, KEY_ENV)
    return CertificateRenewals(cert, key).server_credentials(require_client_auth=False)


def add_public_mtls_port(server: grpc.aio.Server) -> int | None:
    """Open the client-certificate port when configured; its port number, or None."""
    listen = os.environ.get(LISTEN_ENV)
    if not listen:
        return None
    cert, key, client_ca = _readable_files(LISTEN_ENV, CERT_ENV, KEY_ENV, CLIENT_CA_ENV)
    credentials = CertificateRenewals(cert, key, client_ca).server_credentials(require_client_auth=True)
    return server.add_secure_port(listen, credentials)


def _readable_files(needed_by: str, *variables: str) -> list[Path]:
    """The files the variables name; a startup error names what is missing or unreadable."""
    missing = [name for name in variables if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"{needed_by} needs {' and '.join(missing)} (each the path of a PEM file)")
    paths = [Path(os.environ[name]) for name in variables]
    for name, path in zip(variables, paths, strict=True):
        try:
            path.read_bytes()
        except OSError as error:
            raise RuntimeError(f"{name}={path}: cannot read it: {error.strerror or error}") from error
    return paths
