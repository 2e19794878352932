"""A second public port for server-to-server integrations that authenticate with a client
certificate instead of an API key (mutual TLS). Set STUDIO_PUBLIC_MTLS_LISTEN (e.g. 0.0.0.0:50443)
with STUDIO_PUBLIC_TLS_CERT_FILE, STUDIO_PUBLIC_TLS_KEY_FILE (the server's certificate) and
STUDIO_PUBLIC_TLS_CLIENT_CA_FILE (the CA that signs integrations' client certificates). On that port
every client must present a certificate from that CA; its common name is mapped to a tenant
(`studio tenants set TENANT --add-cert-identity CN`). The main public port keeps API keys.

A separate port because gRPC Python's TLS either requires client certificates or never asks for
them: API-key clients and certificate clients cannot share one TLS port."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

LISTEN_ENV = "STUDIO_PUBLIC_MTLS_LISTEN"
CERT_ENV, KEY_ENV, CLIENT_CA_ENV = (
    "STUDIO_PUBLIC_TLS_CERT_FILE", "STUDIO_PUBLIC_TLS_KEY_FILE", "STUDIO_PUBLIC_TLS_CLIENT_CA_FILE",
)


def add_public_mtls_port(server: grpc.aio.Server) -> int | None:
    """Open the client-certificate port when configured; its port number, or None."""
    listen = os.environ.get(LISTEN_ENV)
    if not listen:
        return None
    values = [os.environ.get(name) for name in (CERT_ENV, KEY_ENV, CLIENT_CA_ENV)]
    if not all(values):
        raise RuntimeError(f"{LISTEN_ENV} needs {CERT_ENV}, {KEY_ENV} and {CLIENT_CA_ENV}")
    cert, key, client_ca = (Path(value) for value in values)
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=client_ca.read_bytes(), require_client_auth=True,
    )
    return server.add_secure_port(listen, credentials)
