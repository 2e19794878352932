"""Internal mTLS across certificate renewals (cert-manager swaps the mounted files, with a new key, under running
processes): servers serve the renewed certificate, channels call with it, and files caught mid-renewal change
nothing until they are consistent again. Real servers on free ports, certificates made here."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.cert_renewals import WatchedFiles
from services.common.renewing_channel import RenewingChannel
from services.common.tls import CA_ENV, CERT_ENV, KEY_ENV, TlsFiles, internal_channel
from services.privacy.mtls_test import issue, make_ca

SLOW_REPLIES, SLOW_PAUSE_S = 5, 0.2
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Pki:
    directory: Path
    ca: tuple  # (key, certificate) of the CA that signs both sides at first
    server: TlsFiles  # the server's certificate; its CA file is the bundle it verifies clients against
    client: TlsFiles  # the client's certificate; its CA file is what it trusts the server by


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca("studio-internal-ca")
    pem = ca[1].public_bytes(serialization.Encoding.PEM)
    (tmp_path / "clients-ca.crt").write_bytes(pem)
    (tmp_path / "servers-ca.crt").write_bytes(pem)
    server = issue(tmp_path, ca, "privacy", tmp_path / "clients-ca.crt")
    client = issue(tmp_path, ca, "faceqa", tmp_path / "servers-ca.crt")
    return Pki(tmp_path, ca, server, client)


def renewal(files: TlsFiles, ca: tuple) -> TlsFiles:
    """A new certificate, with a new key, for the holder of FILES, in a folder beside them."""
    directory = files.cert.parent / f"renewal-{os.urandom(4).hex()}"
    directory.mkdir()
    return issue(directory, ca, files.cert.stem, files.ca)


def install(new: TlsFiles, files: TlsFiles, key: bool = True) -> int:
    """NEW's files at FILES' paths, as a Secret volume delivers a renewal (the key left behind when not KEY, as
    if caught mid-renewal). The serial of the certificate now in place."""
    os.replace(new.cert, files.cert)
    if key:
        os.replace(new.key, files.key)
    return serial(files.cert)


def renew(files: TlsFiles, ca: tuple) -> int:
    return install(renewal(files, ca), files)


def serial(cert_file: Path) -> int:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number


def served_serial(address: str, ca_file: Path, client: TlsFiles | None = None) -> int:
    """The serial of the certificate a server presents to a new connection (with CLIENT's certificate, if any)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    if client:
        context.load_cert_chain(client.cert, client.key)
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as connection:
        return x509.load_der_x509_certificate(connection.getpeercert(binary_form=True)).serial_number


async def _peer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The serial of the client certificate the call came with."""
    pem = context.auth_context()["x509_pem_cert"][0]
    return str(x509.load_pem_x509_certificate(pem).serial_number).encode()


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(SLOW_REPLIES):
        await asyncio.sleep(SLOW_PAUSE_S)
        yield await _peer(request, context)


ECHO = grpc.method_handlers_generic_handler("test.Echo", {
    "Peer": grpc.unary_unary_rpc_method_handler(_peer),
    "Slow": grpc.unary_stream_rpc_method_handler(_slow),
})


@pytest_asyncio.fixture(loop_scope="session")
async def server(pki: Pki) -> AsyncIterator[str]:
    """A server on internal credentials (the files' CA bundle verifies clients)."""
    started = grpc.aio.server()
    started.add_generic_rpc_handlers([ECHO])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), started)
    port = started.add_secure_port("127.0.0.1:0", pki.server.server_credentials())
    await started.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await started.stop(grace=None)


async def test_server_presents_the_renewed_certificate_to_new_connections(pki: Pki, server: str) -> None:
    assert await asyncio.to_thread(served_serial, server, pki.client.ca, pki.client) == serial(pki.server.cert)
    renewed = renew(pki.server, pki.ca)
    assert await asyncio.to_thread(served_serial, server, pki.client.ca, pki.client) == renewed


async def test_server_keeps_its_certificate_while_the_key_is_not_yet_renewed(pki: Pki, server: str) -> None:
    before, new = serial(pki.server.cert), renewal(pki.server, pki.ca)
    install(new, pki.server, key=False)
    assert await asyncio.to_thread(served_serial, server, pki.client.ca, pki.client) == before
    os.replace(new.key, pki.server.key)
    assert await asyncio.to_thread(served_serial, server, pki.client.ca, pki.client) == serial(pki.server.cert)


async def test_same_channel_calls_with_the_renewed_certificate_from_a_new_ca(pki: Pki, server: str) -> None:
    old = grpc.ssl_channel_credentials(pki.client.ca.read_bytes(), pki.client.key.read_bytes(),
                                       pki.client.cert.read_bytes())
    async with internal_channel(server, pki.client, check_every_s=0) as channel:
        stub, peer = health_pb2_grpc.HealthStub(channel), channel.unary_unary("/test.Echo/Peer")
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
        new_ca = make_ca("renewed-internal-ca")
        (pki.directory / "new-ca.crt").write_bytes(new_ca[1].public_bytes(serialization.Encoding.PEM))
        os.replace(pki.directory / "new-ca.crt", pki.server.ca)  # the server trusts the new CA only
        renewed = renew(pki.client, new_ca)
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
        assert int(await peer(b"", timeout=5)) == renewed
    async with grpc.aio.secure_channel(server, old) as stale:  # the old certificate no longer gets in
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(stale).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_call_in_flight_outlives_the_renewal(pki: Pki, server: str) -> None:
    before = serial(pki.client.cert)
    async with internal_channel(server, pki.client, check_every_s=0) as channel:
        peer, slow = channel.unary_unary("/test.Echo/Peer"), channel.unary_stream("/test.Echo/Slow")
        stream = slow(b"", timeout=5)
        replies = [await stream.read()]
        renewed = renew(pki.client, pki.ca)
        assert int(await peer(b"", timeout=5)) == renewed  # new calls: a new channel, the old one retiring
        while (reply := await stream.read()) is not grpc.aio.EOF:
            replies.append(reply)
        assert await stream.code() == grpc.StatusCode.OK
        assert [int(reply) for reply in replies] == [before] * SLOW_REPLIES


async def test_channel_keeps_its_certificate_while_the_key_is_not_yet_renewed(pki: Pki, server: str) -> None:
    before, new = serial(pki.client.cert), renewal(pki.client, pki.ca)
    async with internal_channel(server, pki.client, check_every_s=0) as channel:
        peer = channel.unary_unary("/test.Echo/Peer")
        assert int(await peer(b"", timeout=5)) == before
        install(new, pki.client, key=False)
        assert int(await peer(b"", timeout=5)) == before
        os.replace(new.key, pki.client.key)
        assert int(await peer(b"", timeout=5)) == serial(pki.client.cert)


async def test_without_tls_a_channel_is_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CERT_ENV, KEY_ENV, CA_ENV):
        monkeypatch.delenv(name, raising=False)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([ECHO])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with internal_channel(f"127.0.0.1:{port}") as channel:
            assert not isinstance(channel, RenewingChannel)
            with pytest.raises(grpc.aio.AioRpcError):  # a plaintext call: no client certificate to report
                await channel.unary_unary("/test.Echo/Peer")(b"", timeout=5)
    finally:
        await server.stop(grace=None)


async def test_closing_the_channel_ends_a_retiring_one_too(pki: Pki, server: str) -> None:
    channel = internal_channel(server, pki.client, check_every_s=0)
    stream = channel.unary_stream("/test.Echo/Slow")(b"", timeout=5)
    await stream.read()
    renew(pki.client, pki.ca)
    await channel.unary_unary("/test.Echo/Peer")(b"", timeout=5)  # the stream's channel now retires
    await asyncio.wait_for(channel.close(), timeout=1)  # no grace: not the retiring one's 60 s either
    assert await stream.code() == grpc.StatusCode.CANCELLED


async def test_a_retired_channel_is_closed_after_its_grace(pki: Pki, server: str) -> None:
    files = WatchedFiles(pki.client.cert, pki.client.key, pki.client.ca)
    async with RenewingChannel(server, files, check_every_s=0, grace_s=SLOW_PAUSE_S) as channel:
        stream = channel.unary_stream("/test.Echo/Slow")(b"", timeout=5)
        await stream.read()
        renew(pki.client, pki.ca)
        await channel.unary_unary("/test.Echo/Peer")(b"", timeout=5)
        assert await asyncio.wait_for(stream.code(), timeout=2) == grpc.StatusCode.CANCELLED  # not its 5 s deadline
