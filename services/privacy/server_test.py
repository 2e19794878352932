"""The Privacy API over a real socket: auth, policy, consent, tenant isolation, audit, process lifecycle."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from studio.v1 import common_pb2, privacy_pb2, privacy_pb2_grpc

from services.common import topology
from services.common.config import Settings
from services.common.secrets import SERVICE_TOKEN_METADATA, write_secret_file
from services.privacy import policy
from services.privacy.server import SERVICE_NAME, PrivacyServicer, add_to_server, build_servicer
from services.privacy.vault import ShredRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
P = privacy_pb2.KeyPurpose
SERVICES = ("ingest", "faceqa", "trainer", "renderer", "operator")
TOKENS = {name: f"token-for-{name}-0123456789abcdef" for name in SERVICES}


@dataclasses.dataclass
class Running:
    stub: privacy_pb2_grpc.PrivacyStub
    servicer: PrivacyServicer
    data_dir: Path
    kek_file: Path


def write_tokens(directory: Path) -> Path:
    path = directory / "service-tokens.json"
    write_secret_file(path, json.dumps(TOKENS).encode())
    return path


def token(service: str) -> tuple[tuple[str, str], ...]:
    return ((SERVICE_TOKEN_METADATA, TOKENS[service]),)


def consent(scopes=(common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION,), retention_days=30, version="2024-01"):
    return common_pb2.ConsentRecord(agreement_version=version, scopes=scopes, retention_days=retention_days)


@pytest_asyncio.fixture(loop_scope="session")
async def vault(tmp_path: Path) -> AsyncIterator[Running]:
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=tmp_path / "data")
    kek_file = tmp_path / "secrets" / "kek.json"
    servicer = build_servicer(settings, kek_file=kek_file, tokens_file=write_tokens(tmp_path))
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(privacy_pb2_grpc.PrivacyStub(channel), servicer, tmp_path / "data", kek_file)
    finally:
        await channel.close()
        await server.stop(grace=None)
        servicer.close()


async def register(stub, tenant="tenant-a", subject="subject-1", record=None, service="ingest"):
    request = privacy_pb2.RegisterSubjectRequest(
        tenant_id=tenant, subject_id=subject, consent=record if record is not None else consent()
    )
    return await stub.RegisterSubject(request, metadata=token(service), timeout=10)


async def data_key(stub, tenant="tenant-a", subject="subject-1", purpose=P.KEY_PURPOSE_ENCRYPT_UPLOAD,
                   service="ingest", metadata=None):
    request = privacy_pb2.GetDataKeyRequest(tenant_id=tenant, subject_id=subject, purpose=purpose)
    return await stub.GetDataKey(request, metadata=token(service) if metadata is None else metadata, timeout=10)


async def expect_status(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value.details()


def audit_rows(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / "privacy" / "vault.sqlite3") as db:
        return db.execute("SELECT * FROM audit ORDER BY seq").fetchall()


async def test_data_key_is_32_bytes_and_stable(vault: Running) -> None:
    registered = await register(vault.stub)
    first = await data_key(vault.stub)
    second = await data_key(vault.stub)
    assert len(first.data_key) == 32
    assert first.data_key == second.data_key
    assert (first.key_id, first.key_version) == (registered.key_id, registered.key_version) != ("", 0)


async def test_register_is_idempotent_per_tenant(vault: Running) -> None:
    first = await register(vault.stub)
    again = await register(vault.stub)
    assert again.key_id == first.key_id
    await expect_status(register(vault.stub, tenant="tenant-b"), grpc.StatusCode.ALREADY_EXISTS)
    other = await register(vault.stub, subject="subject-2")
    assert other.key_id != first.key_id


async def test_each_service_gets_only_its_purposes(vault: Running) -> None:
    await register(vault.stub)
    details = await expect_status(
        data_key(vault.stub, purpose=P.KEY_PURPOSE_DECRYPT_PHOTO, service="renderer"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "renderer" in details and "KEY_PURPOSE_DECRYPT_PHOTO" in details
    for service, granted in policy.POLICY.items():
        for purpose in granted.key_purposes:
            assert len((await data_key(vault.stub, purpose=purpose, service=service)).data_key) == 32
    await expect_status(data_key(vault.stub, purpose=P.KEY_PURPOSE_UNSPECIFIED),
                        grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize("metadata", [(), ((SERVICE_TOKEN_METADATA, "not-a-token"),),
                                      ((SERVICE_TOKEN_METADATA, TOKENS["ingest"] + "x"),)])
async def test_missing_or_wrong_token_is_unauthenticated(vault: Running, metadata) -> None:
    await register(vault.stub)
    await expect_status(data_key(vault.stub, metadata=metadata), grpc.StatusCode.UNAUTHENTICATED)
    request = privacy_pb2.RegisterSubjectRequest(tenant_id="t", subject_id="s", consent=consent())
    await expect_status(vault.stub.RegisterSubject(request, metadata=metadata),
                        grpc.StatusCode.UNAUTHENTICATED)


async def test_only_ingest_registers_subjects(vault: Running) -> None:
    await expect_status(register(vault.stub, service="faceqa"), grpc.StatusCode.PERMISSION_DENIED)


async def test_other_tenant_and_unknown_subject_are_not_found(vault: Running) -> None:
    await register(vault.stub)
    await expect_status(data_key(vault.stub, tenant="tenant-b"), grpc.StatusCode.NOT_FOUND)
    await expect_status(data_key(vault.stub, subject="nobody"), grpc.StatusCode.NOT_FOUND)
    request = privacy_pb2.GetConsentRequest(tenant_id="tenant-b", subject_id="subject-1")
    await expect_status(vault.stub.GetConsent(request, metadata=token("renderer")), grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize(("record", "code"), [
    (consent(scopes=()), grpc.StatusCode.FAILED_PRECONDITION),
    (consent(scopes=(common_pb2.CONSENT_SCOPE_UNSPECIFIED,)), grpc.StatusCode.FAILED_PRECONDITION),
    (consent(retention_days=0), grpc.StatusCode.INVALID_ARGUMENT),
    (consent(retention_days=3651), grpc.StatusCode.INVALID_ARGUMENT),
    (consent(version=""), grpc.StatusCode.INVALID_ARGUMENT),
])
async def test_register_validates_consent(vault: Running, record, code) -> None:
    details = await expect_status(register(vault.stub, record=record), code)
    assert details
    await expect_status(data_key(vault.stub), grpc.StatusCode.NOT_FOUND)


async def test_register_requires_ids_and_consent(vault: Running) -> None:
    await expect_status(register(vault.stub, subject=""), grpc.StatusCode.INVALID_ARGUMENT)
    bare = privacy_pb2.RegisterSubjectRequest(tenant_id="t", subject_id="s")
    await expect_status(vault.stub.RegisterSubject(bare, metadata=token("ingest")),
                        grpc.StatusCode.INVALID_ARGUMENT)


async def test_get_consent_returns_record_with_grant_time(vault: Running) -> None:
    await register(vault.stub, record=consent(retention_days=90))
    request = privacy_pb2.GetConsentRequest(tenant_id="tenant-a", subject_id="subject-1")
    await expect_status(vault.stub.GetConsent(request, metadata=token("operator")), grpc.StatusCode.PERMISSION_DENIED)
    for service in ("ingest", "faceqa", "trainer", "renderer"):
        record = (await vault.stub.GetConsent(request, metadata=token(service))).consent
        assert record.agreement_version == "2024-01" and record.retention_days == 90
        assert list(record.scopes) == [common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION]
        assert abs(record.granted_at.seconds - time.time()) < 60


def test_consent_past_retention_covers_nothing() -> None:
    record = consent(retention_days=1)
    record.granted_at.FromSeconds(1_000_000)
    assert policy.consent_shortfall(record, P.KEY_PURPOSE_ENCRYPT_UPLOAD, now=1_000_000 + 3600) is None
    assert "retention" in policy.consent_shortfall(record, P.KEY_PURPOSE_ENCRYPT_UPLOAD, now=1_000_000 + 86_400)
    assert "CONSENT_SCOPE_PORTRAIT_GENERATION" in policy.consent_shortfall(
        consent(scopes=()), P.KEY_PURPOSE_DECRYPT_LORA
    )


async def test_key_files_are_private(vault: Running) -> None:
    await register(vault.stub)
    assert stat.S_IMODE(vault.kek_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((vault.data_dir / "privacy").stat().st_mode) == 0o700
    assert stat.S_IMODE((vault.data_dir / "privacy" / "vault.sqlite3").stat().st_mode) == 0o600


async def test_store_never_holds_plaintext_key(vault: Running) -> None:
    await register(vault.stub)
    dek = (await data_key(vault.stub)).data_key
    forms = [dek, dek.hex().encode(), base64.b64encode(dek)]
    stored = [path.read_bytes() for path in (vault.data_dir / "privacy").iterdir()]
    assert stored and not any(form in blob for form in forms for blob in stored)


async def test_every_decision_is_audited_without_secrets(vault: Running) -> None:
    await register(vault.stub)
    dek = (await data_key(vault.stub)).data_key
    await expect_status(data_key(vault.stub, purpose=P.KEY_PURPOSE_DECRYPT_PHOTO, service="renderer"),
                        grpc.StatusCode.PERMISSION_DENIED)
    await expect_status(data_key(vault.stub, metadata=()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_status(data_key(vault.stub, tenant="tenant-b"), grpc.StatusCode.NOT_FOUND)
    rows = audit_rows(vault.data_dir)
    decisions = [(row[2], row[3], row[6], row[7]) for row in rows]
    assert decisions == [
        ("ingest", "RegisterSubject", "", "ALLOWED"),
        ("ingest", "GetDataKey", "KEY_PURPOSE_ENCRYPT_UPLOAD", "ALLOWED"),
        ("renderer", "GetDataKey", "KEY_PURPOSE_DECRYPT_PHOTO", "DENIED_POLICY"),
        ("-", "GetDataKey", "KEY_PURPOSE_ENCRYPT_UPLOAD", "DENIED_UNAUTHENTICATED"),
        ("ingest", "GetDataKey", "KEY_PURPOSE_ENCRYPT_UPLOAD", "NOT_FOUND"),
    ]
    text = repr(rows)
    for secret in [dek.hex(), base64.b64encode(dek).decode(), *TOKENS.values()]:
        assert secret not in text
    assert not any(dek in value for row in rows for value in row if isinstance(value, bytes))


async def test_tampering_with_audit_breaks_the_chain(vault: Running) -> None:
    await register(vault.stub)
    await data_key(vault.stub)
    await data_key(vault.stub, service="faceqa", purpose=P.KEY_PURPOSE_DECRYPT_PHOTO)
    assert await vault.servicer.vault.verify_audit_chain()
    with sqlite3.connect(vault.data_dir / "privacy" / "vault.sqlite3") as db:
        db.execute("UPDATE audit SET outcome = 'DENIED_POLICY' WHERE seq = 2")
    assert not await vault.servicer.vault.verify_audit_chain()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def wait_until_serving(channel: grpc.aio.Channel, deadline_s: float = 20) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < deadline, "privacy never reported SERVING"
        await asyncio.sleep(0.1)


async def test_module_runs_and_stops_on_sigterm(tmp_path: Path, nats_server) -> None:
    port = free_port()
    env = {
        **os.environ, "STUDIO_LISTEN": f"127.0.0.1:{port}", "STUDIO_METRICS_PORT": "0",
        "STUDIO_NATS_URL": nats_server.url,
        "STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_KEK_FILE": str(tmp_path / "kek.json"),
        "STUDIO_SERVICE_TOKENS_FILE": str(write_tokens(tmp_path)),
        # Configured as in Kubernetes, its Secret not filled yet (mounted optional): the vault runs, signs nothing.
        "STUDIO_PROVENANCE_KEY_FILE": str(tmp_path / "provenance" / "provenance.key"),
        "STUDIO_PROVENANCE_CHAIN_FILE": str(tmp_path / "provenance" / "provenance-chain.pem"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.privacy", cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_until_serving(channel)
            stub = privacy_pb2_grpc.PrivacyStub(channel)
            await register(stub)
            assert len((await data_key(stub)).data_key) == 32
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
        assert process.returncode == 0, stderr.decode()
        assert TOKENS["ingest"].encode() not in stderr
        assert b"portraits cannot be signed" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_key_shredded_after_the_consent_check_is_not_found(vault: Running) -> None:
    await register(vault.stub)
    store = vault.servicer.vault
    check_consent = store.consent

    async def consent_then_shred(tenant_id: str, subject_id: str):
        granted = await check_consent(tenant_id, subject_id)
        await store.shred(ShredRequest(tenant_id, subject_id, privacy_pb2.DELETION_REASON_REQUESTED, "ingest",
                                       topology.PURGING_SERVICES))
        return granted

    store.consent = consent_then_shred  # a deletion lands between the consent check and the key read
    details = await expect_status(data_key(vault.stub), grpc.StatusCode.NOT_FOUND)
    assert "not found" in details
    last = audit_rows(vault.data_dir)[-1]
    assert (last[2], last[3], last[7]) == ("ingest", "GetDataKey", "NOT_FOUND")


async def test_a_repeated_registration_is_audited_and_must_ask_for_the_same_consent(vault: Running) -> None:
    granted = consent()
    granted.granted_at.FromSeconds(int(time.time()))
    first = await register(vault.stub, record=granted)
    assert (await register(vault.stub, record=granted)).key_id == first.key_id  # ingest retrying: idempotent
    assert (await register(vault.stub)).key_id == first.key_id  # no grant time named: the recorded one stands
    other_grant = consent()
    other_grant.granted_at.FromSeconds(int(time.time()) - 86_400)
    other_scopes = consent(scopes=(common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION, common_pb2.CONSENT_SCOPE_UNSPECIFIED))
    for changed in (consent(retention_days=90), consent(version="2025-01"), other_grant, other_scopes):
        details = await expect_status(register(vault.stub, record=changed), grpc.StatusCode.ALREADY_EXISTS)
        assert "other consent" in details
    request = privacy_pb2.GetConsentRequest(tenant_id="tenant-a", subject_id="subject-1")
    assert (await vault.stub.GetConsent(request, metadata=token("ingest"))).consent == granted
    registrations = [(row[2], row[7], row[10]) for row in audit_rows(vault.data_dir) if row[3] == "RegisterSubject"]
    repeat = json.dumps({"already_registered": True})
    assert registrations == [("ingest", "ALLOWED", ""), ("ingest", "ALLOWED", repeat), ("ingest", "ALLOWED", repeat),
                             *[("ingest", "DENIED_CONFLICT", "")] * 4]
