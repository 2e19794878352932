"""TLS on the public port, for server-to-server integrations that authenticate with a client
certificate instead of an API key. Set all three of STUDIO_PUBLIC_TLS_CERT_FILE, _KEY_FILE and
_CLIENT_CA_FILE: the port then speaks TLS only; a client certificate signed by the client CA is
verified and its common name mapped to a tenant (`studio tenants set ID --add-cert-identity CN`);
clients without a certificate still authenticate with their API key. Unset, the port is plaintext
(the embedded stack on loopback; in Kubernetes TLS may end at the ingress)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

CERT_ENV, KEY_ENV, CLIENT_CA_ENV = (
    "STUDIO_PUBLIC_TLS_CERT_FILE", "STUDIO_PUBLIC_TLS_KEY_FILE", "STUDIO_PUBLIC_TLS_CLIENT_CA_FILE",
)


def public_server_credentials() -> grpc.ServerCredentials | None:
    values = [os.environ.get(name) for name in (CERT_ENV, KEY_ENV, CLIENT_CA_ENV)]
    if not any(values):
        return None
    if not all(values):
        raise RuntimeError(f"public TLS needs all of {CERT_ENV}, {KEY_ENV} and {CLIENT_CA_ENV}")
    cert, key, client_ca = (Path(value) for value in values)
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=client_ca.read_bytes(), require_client_auth=False,
    )
