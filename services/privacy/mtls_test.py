"""Service identity by mTLS (as in Kubernetes): the vault takes the caller's name from its verified
client certificate; a certificate from another CA, or none, never gets through the handshake."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from studio.v1 import privacy_pb2, privacy_pb2_grpc

from services.common.config import Settings
from services.common.tls import TlsFiles, internal_channel
from services.privacy.server import add_to_server, build_servicer
from services.privacy.server_test import audit_rows, consent

NOW = datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5)).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(directory: Path, ca, common_name: str, ca_file: Path) -> TlsFiles:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5)).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(directory / f"{common_name}.crt", directory / f"{common_name}.key", ca_file)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_pem_key(key))
    return files


@dataclasses.dataclass
class MtlsVault:
    address: str
    tls: dict[str, TlsFiles]
    data_dir: Path


@pytest_asyncio.fixture(loop_scope="session")
async def mtls_vault(tmp_path: Path) -> AsyncIterator[MtlsVault]:
    ca, rogue_ca = make_ca("studio-internal-ca"), make_ca("rogue-ca")
    ca_file, rogue_file = tmp_path / "ca.crt", tmp_path / "rogue-ca.crt"
    ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    rogue_file.write_bytes(rogue_ca[1].public_bytes(serialization.Encoding.PEM))
    tls = {name: issue(tmp_path, ca, name, ca_file) for name in ("privacy", "ingest", "faceqa", "printer")}
    (tmp_path / "rogue").mkdir()
    tls["rogue-faceqa"] = issue(tmp_path / "rogue", rogue_ca, "faceqa", ca_file)  # right name, wrong CA
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=tmp_path / "data")
    servicer = build_servicer(settings, kek_file=tmp_path / "kek.json")  # no tokens: mTLS only
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", tls["privacy"].server_credentials())
    await server.start()
    try:
        yield MtlsVault(f"127.0.0.1:{port}", tls, tmp_path / "data")
    finally:
        await server.stop(grace=None)
        servicer.close()


async def call_as(vault: MtlsVault, identity: str, call):
    async with internal_channel(vault.address, vault.tls[identity]) as channel:
        return await call(privacy_pb2_grpc.PrivacyStub(channel))


def register(stub):
    return stub.RegisterSubject(privacy_pb2.RegisterSubjectRequest(
        tenant_id="t", subject_id="s", consent=consent()), timeout=10)


def photo_key(stub):
    return stub.GetDataKey(privacy_pb2.GetDataKeyRequest(
        tenant_id="t", subject_id="s", purpose=privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO), timeout=10)


async def test_certificate_names_the_caller(mtls_vault: MtlsVault) -> None:
    await call_as(mtls_vault, "ingest", register)
    assert len((await call_as(mtls_vault, "faceqa", photo_key)).data_key) == 32
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_as(mtls_vault, "ingest", photo_key)  # ingest may not decrypt photos
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_as(mtls_vault, "printer", photo_key)  # a valid certificate, but no such service
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    decisions = [(row[2], row[3], row[7]) for row in audit_rows(mtls_vault.data_dir)]
    assert ("faceqa", "GetDataKey", "ALLOWED") in decisions
    assert ("printer", "GetDataKey", "DENIED_POLICY") in decisions


async def test_foreign_or_missing_certificate_is_refused(mtls_vault: MtlsVault) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_as(mtls_vault, "rogue-faceqa", photo_key)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    ca_only = grpc.ssl_channel_credentials(root_certificates=mtls_vault.tls["faceqa"].ca.read_bytes())
    async with grpc.aio.secure_channel(mtls_vault.address, ca_only) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await photo_key(privacy_pb2_grpc.PrivacyStub(channel))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(mtls_vault.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await photo_key(privacy_pb2_grpc.PrivacyStub(channel))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
