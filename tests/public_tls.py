"""A second ingest replica on the session stack with the client-certificate port open (server-to-server
integrations), for the mTLS tenant tests."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common.launchers.process import ManagedProcess, free_ports
from services.ingest.public_tls import CERT_ENV, CLIENT_CA_ENV, KEY_ENV, LISTEN_ENV
from services.privacy.mtls_test import issue, make_ca
from studio_client import ClientTls


@dataclass
class TlsIngest:
    endpoint: str
    directory: Path
    ca_pem: bytes
    ca: tuple

    def client(self, identity: str | None) -> ClientTls:
        """TLS for a client; with an identity, a client certificate of that common name."""
        if identity is None:
            return ClientTls(self.ca_pem)
        files = issue(self.directory, self.ca, identity, self.directory / "ca.crt")
        return ClientTls(self.ca_pem, files.cert.read_bytes(), files.key.read_bytes())


@asynccontextmanager
async def start_tls_ingest(stack: EmbeddedStack, directory: Path, identities: list[str]) -> AsyncIterator[TlsIngest]:
    ca = make_ca("public-clients-ca")
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    server = issue(directory, ca, "ingest-public", directory / "ca.crt")
    port, mtls_port = free_ports(2, exclude={stack.public_port})
    env = stack._service_env("ingest", stack._base_model(lambda message: None), f"127.0.0.1:{port}")
    env.update({CERT_ENV: str(server.cert), KEY_ENV: str(server.key), CLIENT_CA_ENV: str(server.ca),
                LISTEN_ENV: f"127.0.0.1:{mtls_port}"})
    process = ManagedProcess("ingest-tls", [sys.executable, "-m", "services.ingest"], stack.paths.logs, env=env,
                             cwd=REPO_ROOT)
    process.start()
    try:
        await process.wait_ready(lambda: grpc_healthy(f"127.0.0.1:{port}"), timeout=120)
        yield TlsIngest(f"127.0.0.1:{mtls_port}", directory, ca_pem, ca)
    finally:
        process.stop()
