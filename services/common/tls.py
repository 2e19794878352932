"""Mutual TLS between services (Kubernetes: cert-manager issues each service a certificate whose
common name is the service name). Unset, services talk plaintext on loopback (embedded stack) and
identify themselves to the vault with per-service tokens instead."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

CERT_ENV, KEY_ENV, CA_ENV = "STUDIO_TLS_CERT_FILE", "STUDIO_TLS_KEY_FILE", "STUDIO_TLS_CA_FILE"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_env(cls) -> TlsFiles | None:
        values = [os.environ.get(name) for name in (CERT_ENV, KEY_ENV, CA_ENV)]
        if not any(values):
            return None
        if not all(values):
            raise RuntimeError(f"mTLS needs all of {CERT_ENV}, {KEY_ENV} and {CA_ENV}")
        return cls(*(Path(value) for value in values))

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(), require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(), private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


def internal_server_credentials() -> grpc.ServerCredentials | None:
    """mTLS for an internal service's port when configured; None means plaintext."""
    tls = TlsFiles.from_env()
    return tls.server_credentials() if tls else None


def internal_channel(address: str, tls: TlsFiles | None = None, server_name: str | None = None) -> grpc.aio.Channel:
    """A channel to another internal service: mTLS when configured, else plaintext. SERVER_NAME is the name to
    verify the server's certificate against when ADDRESS is not one it names (`privacy` for 127.0.0.1)."""
    tls = tls or TlsFiles.from_env()
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def peer_common_name(context: grpc.aio.ServicerContext) -> str | None:
    """The verified client certificate's common name, when the call came over mTLS."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None
