"""Mutual TLS between services (Kubernetes: cert-manager issues each service a certificate whose
common name is the service name). Unset, services talk plaintext on loopback (embedded stack) and
identify themselves to the vault with per-service tokens instead. cert-manager renews the certificates under
running processes: servers and channels take up the renewed files (services/common/cert_renewals.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common.cert_renewals import CertificateRenewals, WatchedFiles
from services.common.renewing_channel import CHECK_EVERY_S, RenewingChannel

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
        """Client certificates required and verified against the CA bundle; renewed files served from the next
        handshake on."""
        return CertificateRenewals(self.cert, self.key, self.ca).server_credentials(require_client_auth=True)


def internal_server_credentials() -> grpc.ServerCredentials | None:
    """mTLS for an internal service's port when configured; None means plaintext."""
    tls = TlsFiles.from_env()
    return tls.server_credentials() if tls else None


def internal_channel(address: str, tls: TlsFiles | None = None, server_name: str | None = None, *,
                     check_every_s: float = CHECK_EVERY_S) -> grpc.aio.Channel:
    """A channel to another internal service: mTLS when configured, else plaintext. SERVER_NAME is the name to
    verify the server's certificate against when ADDRESS is not one it names (`privacy` for 127.0.0.1). Over mTLS,
    new calls go with the renewed certificate once its files change (looked at every CHECK_EVERY_S)."""
    tls = tls or TlsFiles.from_env()
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return RenewingChannel(address, WatchedFiles(tls.cert, tls.key, tls.ca), options, check_every_s=check_every_s)


def peer_common_name(context: grpc.aio.ServicerContext) -> str | None:
    """The verified client certificate's common name, when the call came over mTLS."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None
