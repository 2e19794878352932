"""The public ports across certificate renewals: both serve the renewed certificate from the next connection on
(the shared services/common/cert_renewals.py), the client-certificate port still verifying clients."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from services.common.tls_test import renew, serial, served_serial
from services.ingest import public_tls
from services.ingest.public_tls import CERT_ENV, CLIENT_CA_ENV, KEY_ENV, LISTEN_ENV, TLS_ENV
from services.privacy.mtls_test import issue, make_ca


@pytest.fixture
def public_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    ca = make_ca("public-ca")
    (tmp_path / "ca.crt").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    server = issue(tmp_path, ca, "studio-public", tmp_path / "ca.crt")
    for name, path in ((CERT_ENV, server.cert), (KEY_ENV, server.key), (CLIENT_CA_ENV, server.ca)):
        monkeypatch.setenv(name, str(path))
    return ca, server


async def test_the_main_public_port_serves_the_renewed_certificate(public_files: tuple, monkeypatch) -> None:
    ca, files = public_files
    monkeypatch.setenv(TLS_ENV, "on")
    server = grpc.aio.server()
    port = server.add_secure_port("127.0.0.1:0", public_tls.public_server_credentials())
    await server.start()
    try:
        address = f"127.0.0.1:{port}"
        assert await asyncio.to_thread(served_serial, address, files.ca) == serial(files.cert)  # no client cert
        renewed = renew(files, ca)
        assert await asyncio.to_thread(served_serial, address, files.ca) == renewed
    finally:
        await server.stop(grace=None)


async def test_the_client_certificate_port_serves_the_renewed_certificate(public_files: tuple, monkeypatch) -> None:
    ca, files = public_files
    client = issue(files.cert.parent, ca, "lab-printer-01", files.ca)
    monkeypatch.setenv(LISTEN_ENV, "127.0.0.1:0")
    server = grpc.aio.server()
    port = public_tls.add_public_mtls_port(server)
    await server.start()
    try:
        address = f"127.0.0.1:{port}"
        renewed = renew(files, ca)
        assert await asyncio.to_thread(served_serial, address, files.ca, client) == renewed
        with pytest.raises((ssl.SSLError, ConnectionError)):  # still no way in without a client certificate
            await asyncio.to_thread(_read_after_handshake, address, files.ca)
    finally:
        await server.stop(grace=None)


def _read_after_handshake(address: str, ca_file: Path) -> None:
    """TLS 1.3 completes the client's handshake before the server checks it: the refusal comes on first read."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as connection:
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if not connection.recv(1):
            raise ConnectionError("closed")
