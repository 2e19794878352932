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
    cert, key = _read_files(f"{TLS_ENV}=on", CERT_ENV, KEY_ENV)
    renewals = CertificateRenewals(Path(os.environ[CERT_ENV]), Path(os.environ[KEY_ENV]))
    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)]), renewals.fetch, require_client_authentication=False,
    )


class CertificateRenewals:
    """cert-manager renews the public certificate with a new key every few weeks, and a process runs longer
    than a certificate lives: gRPC asks `fetch` at each TLS handshake whether to serve a new one."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._files = (cert, key)
        self._served = self._stamp()

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The files' new contents once they changed; None keeps the one served. Runs on gRPC's own threads,
        so it never raises: unreadable files keep the certificate served."""
        try:
            before = self._stamp()
            if before == self._served:
                return None
            cert, key = (path.read_bytes() for path in self._files)
            if self._stamp() != before:  # caught mid-renewal (a certificate and a key that may not match)
                return None
        except OSError:
            return None
        self._served = before
        return grpc.ssl_server_certificate_configuration([(key, cert)])

    def _stamp(self) -> tuple:
        # A Secret volume swaps a symbolic link to new files: stat follows it.
        return tuple((info.st_ino, info.st_mtime_ns, info.st_size) for info in (path.stat() for path in self._files))


def add_public_mtls_port(server: grpc.aio.Server) -> int | None:
    """Open the client-certificate port when configured; its port number, or None."""
    listen = os.environ.get(LISTEN_ENV)
    if not listen:
        return None
    cert, key, client_ca = _read_files(LISTEN_ENV, CERT_ENV, KEY_ENV, CLIENT_CA_ENV)
    credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=True)
    return server.add_secure_port(listen, credentials)


def _read_files(needed_by: str, *variables: str) -> list[bytes]:
    """The contents of the files the variables name; a startup error names what is missing or unreadable."""
    missing = [name for name in variables if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"{needed_by} needs {' and '.join(missing)} (each the path of a PEM file)")
    contents = []
    for name in variables:
        path = Path(os.environ[name])
        try:
            contents.append(path.read_bytes())
        except OSError as error:
            raise RuntimeError(f"{name}={path}: cannot read it: {error.strerror or error}") from error
    return contents
