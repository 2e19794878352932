"""Second ingest replicas on the session stack: one with the client-certificate port open (server-to-server
integrations), for the mTLS tenant tests, and one whose main public port serves TLS to API-key clients."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common.grpc_server import HEALTH_PORT_ENV
from services.common.launchers.process import ManagedProcess, free_ports
from services.common.tls import TlsFiles
from services.ingest.public_tls import CERT_ENV, CLIENT_CA_ENV, KEY_ENV, LISTEN_ENV, TLS_ENV
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


@dataclass
class PublicTlsIngest:
    endpoint: str  # the main public port, TLS
    health_endpoint: str  # the plaintext health-only port kubelet probes
    ca_file: Path  # what a client trusts: the CA that signed the public port's certificate
    server: TlsFiles  # the files ingest serves

    def client_tls(self) -> ClientTls:
        return ClientTls(self.ca_file.read_bytes())

    def renew(self) -> Path:
        """A renewal as cert-manager's Secret volume delivers it: new files at the same paths (here from another
        CA, so that a client can tell which certificate it was served). The new CA's file."""
        directory = self.server.cert.parent / "renewed"
        directory.mkdir()
        ca = make_ca("renewed-public-ca")
        ca_file = directory / "ca.crt"
        ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
        renewed = issue(directory, ca, "studio-public", ca_file)
        os.replace(renewed.key, self.server.key)
        os.replace(renewed.cert, self.server.cert)
        return ca_file


@asynccontextmanager
async def start_tls_ingest(stack: EmbeddedStack, directory: Path, identities: list[str]) -> AsyncIterator[TlsIngest]:
    ca = make_ca("public-clients-ca")
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    server = issue(directory, ca, "ingest-public", directory / "ca.crt")
    port, mtls_port = free_ports(2, exclude={stack.public_port})
    env = {CERT_ENV: str(server.cert), KEY_ENV: str(server.key), CLIENT_CA_ENV: str(server.ca),
           LISTEN_ENV: f"127.0.0.1:{mtls_port}"}
    async with _ingest(stack, "ingest-tls", port, env, ready_at=f"127.0.0.1:{port}"):
        yield TlsIngest(f"127.0.0.1:{mtls_port}", directory, ca_pem, ca)


@asynccontextmanager
async def start_public_tls_ingest(stack: EmbeddedStack, directory: Path) -> AsyncIterator[PublicTlsIngest]:
    """An ingest replica as prod runs it: STUDIO_PUBLIC_TLS=on, probed on its plaintext health port."""
    ca = make_ca("public-port-ca")
    ca_file = directory / "public-ca.crt"
    ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    server = issue(directory, ca, "studio-public", ca_file)
    port, health_port = free_ports(2, exclude={stack.public_port})
    env = {TLS_ENV: "on", CERT_ENV: str(server.cert), KEY_ENV: str(server.key), HEALTH_PORT_ENV: str(health_port)}
    health = f"127.0.0.1:{health_port}"
    async with _ingest(stack, "ingest-public-tls", port, env, ready_at=health):
        yield PublicTlsIngest(f"127.0.0.1:{port}", health, ca_file, server)


@asynccontextmanager
async def _ingest(stack: EmbeddedStack, name: str, port: int, env: dict[str, str],
                  ready_at: str) -> AsyncIterator[None]:
    """An ingest process on the stack, listening on PORT with ENV added; ready when READY_AT answers health checks."""
    service_env = stack._service_env("ingest", stack._base_model(lambda message: None), f"127.0.0.1:{port}")
    process = ManagedProcess(name, [sys.executable, "-m", "services.ingest"], stack.paths.logs,
                             env={**service_env, **env}, cwd=REPO_ROOT)
    process.start()
    try:
        await process.wait_ready(lambda: grpc_healthy(ready_at), timeout=120)
        yield
    finally:
        process.stop()
