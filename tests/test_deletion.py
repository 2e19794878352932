"""Deletion through the running stack: the key is shredded at once, every service purges and confirms,
the vault signs a certificate that verifies offline, and no trace of the subject is left in the
object store or in any NATS stream or bucket. A service down at deletion time purges when it comes
back; a vault killed mid-deletion resumes and no key comes back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from nats.js.errors import NotFoundError
from studio.v1 import common_pb2, events_pb2, privacy_pb2, privacy_pb2_grpc, studio_pb2

from services.cli.client import StudioClient
from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common import topology
from services.common.blobstore import open_blob_store
from services.common.bus import Bus
from services.common.deletion_guard import DeletionGuard
from services.common.objects import portrait_key
from services.common.secrets import SERVICE_TOKEN_METADATA
from services.common.signatures import load_public_key, verify_document
from services.common.vault_client import SealedStore, VaultClient
from services.common.write_leases import WriteLeases
from services.ingest.context import ensure_tenant
from services.renderer.records import RECORDS_FILE
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")
REFERENCE = common_pb2.PHOTO_ROLE_REFERENCE
CERTIFIED = privacy_pb2.DELETION_STATE_CERTIFIED


async def subject_with_portraits(client: StudioClient) -> tuple[str, str]:
    subject = await client.create_subject(external_ref="to-be-forgotten", idempotency_key="forget-me")
    photos = faces("lisa")
    headshot = next(path for path in photos if path.name == "lisa_lisa1.jpg")
    references = [path for path in photos if path != headshot][:2]
    await client.upload(subject.subject_id, [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)]
                        + [(path, REFERENCE) for path in references])
    order = await client.create_order(subject.subject_id, ["studio-frontal-soft"], 1, idempotency_key="forget-o")
    async for response in client.watch(order.order_id, timeout_s=300):
        last = response.event.WhichOneof("kind")
    assert last == "done"
    return subject.subject_id, order.order_id


async def nats_traces(stack: EmbeddedStack, needle: str) -> list[str]:
    """Every stream message (work queues, events, deletions, KV buckets) that names `needle`."""
    bus = await Bus.connect(stack.nats.url, name="scan")
    found = []
    try:
        for info in await bus.js.streams_info():
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    message = await bus.js.get_msg(info.config.name, seq)
                except Exception:  # deleted or purged sequence
                    continue
                if needle.encode() in (message.data or b"") or needle in (message.subject or ""):
                    found.append(f"{info.config.name}#{seq} {message.subject}")
    finally:
        await bus.close()
    return found


def stored_traces(stack: EmbeddedStack, needle: str) -> list[Path]:
    return [path for path in (stack.data_dir / "blobs").rglob("*") if needle in str(path)]


async def vault_key_status(stack: EmbeddedStack, subject_id: str) -> grpc.StatusCode:
    token = stack.paths.token_file("renderer").read_text().strip()
    async with grpc.aio.insecure_channel(stack.addresses["privacy"]) as channel:
        try:
            await privacy_pb2_grpc.PrivacyStub(channel).GetDataKey(
                privacy_pb2.GetDataKeyRequest(tenant_id="default", subject_id=subject_id,
                                              purpose=privacy_pb2.KEY_PURPOSE_DECRYPT_LORA),
                metadata=((SERVICE_TOKEN_METADATA, token),), timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def expect_not_found(call) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deletion_is_complete_and_certified(client: StudioClient, stack: EmbeddedStack) -> None:
    subject_id, order_id = await subject_with_portraits(client)
    assert stored_traces(stack, subject_id) and await nats_traces(stack, subject_id)
    assert [p.name for p in stored_traces(stack, subject_id) if p.name == RECORDS_FILE]  # seeds, settings, scores
    assert await vault_key_status(stack, subject_id) == grpc.StatusCode.OK
    client_photo_ids = [photo.client_photo_id for photo in (await client.get_subject(subject_id)).photos]
    assert len(client_photo_ids) == 3 and all(client_photo_ids)

    deletion = await client.delete_subject(subject_id)
    # Shredded before the reply: the key is gone now, whatever the services are doing.
    assert await vault_key_status(stack, subject_id) == grpc.StatusCode.NOT_FOUND
    assert deletion.deletion_id and deletion.key_shredded_at.seconds > 0 and not deletion.tenant_id
    assert (await client.delete_subject(subject_id)).deletion_id == deletion.deletion_id  # idempotent

    started = asyncio.get_running_loop().time()
    deletion = await client.wait_for_certificate(deletion.deletion_id, timeout_s=60)
    assert asyncio.get_running_loop().time() - started < 60
    destroyed = {c.service: dict(c.destroyed) for c in deletion.confirmations}
    assert set(destroyed) == {"ingest", "faceqa", "trainer", "renderer"}
    assert destroyed["ingest"]["photos"] == 3 and destroyed["ingest"]["orders"] == 1
    assert destroyed["ingest"]["index_entries"] == 2  # the subject's and its order's listing entries
    assert destroyed["faceqa"]["crops"] == 3
    assert destroyed["trainer"]["loras"] == 1
    assert destroyed["renderer"]["portraits"] == 1 and destroyed["renderer"]["render_records"] == 1, destroyed
    assert destroyed["renderer"]["triton_adapters"] == 1, destroyed

    certificate = json.loads(deletion.certificate)
    verify_document(certificate, load_public_key(stack.paths.public_key_file.read_bytes()))
    assert certificate["subject_id"] == subject_id and certificate["reason"] == "DELETION_REASON_REQUESTED"

    await expect_not_found(client.stub.GetSubject(studio_pb2.GetSubjectRequest(subject_id=subject_id),
                                                  metadata=client.metadata))
    await expect_not_found(client.get_order(order_id))
    await expect_not_found(client.create_order(subject_id, ["studio-frontal-soft"], 1))
    assert stored_traces(stack, subject_id) == []
    assert await nats_traces(stack, subject_id) == []
    # Nor of its order in ingest's state (orders, listing index, idempotency, the running-order quota),
    # nor of its photos' client ids (upload progress), nor the trainer's done-once record of its job.
    assert await nats_traces(stack, order_id) == []
    for client_photo_id in client_photo_ids:
        assert await nats_traces(stack, client_photo_id) == []
    # The same idempotency key now makes a new subject: the old entry is gone too.
    assert (await client.create_subject(idempotency_key="forget-me")).subject_id != subject_id

    # An event published before the deletion but stored after the purge (its publisher's connection held it through
    # a reconnect) is erased as it arrives.
    bus = await Bus.connect(stack.nats.url, name="late-publisher")
    try:
        late = events_pb2.OrderEvent(order_id=order_id, tenant_id="default", subject_id=subject_id,
                                     rendering=events_pb2.RenderingProgress(rendered=1, total=1))
        await bus.publish(topology.order_events_subject(order_id), late)  # stored once this returns
        for _ in range(100):
            try:
                await bus.js.get_last_msg(topology.EVENTS_STREAM.name, topology.order_events_subject(order_id))
            except NotFoundError:
                break
            await asyncio.sleep(0.1)
    finally:
        await bus.close()
    assert await nats_traces(stack, subject_id) == []


async def test_a_write_on_another_replica_cannot_outlive_the_purge(client: StudioClient, stack: EmbeddedStack) -> None:
    """A renderer replica that has not heard of the deletion yet, its data key cached from before the shred, stores
    a portrait just after the subject is deleted: the purge waits for it, so the certificate leaves nothing."""
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[1], REFERENCE)])
    bus = await Bus.connect(stack.nats.url, name="renderer-replica")
    vault = VaultClient.from_token_file(stack.addresses["privacy"], stack.paths.token_file("renderer"))
    replica = SealedStore(await open_blob_store(f"file://{stack.data_dir / 'blobs'}"), vault, DeletionGuard(),
                          WriteLeases(bus))
    late = portrait_key("default", subject.subject_id, "order_late", "p1")
    try:
        await replica.put("default", subject.subject_id, late, b"before", privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT)
        deletion = await client.delete_subject(subject.subject_id)
        await asyncio.sleep(0.3)  # the other replicas' purges have begun
        await replica.put("default", subject.subject_id, late, b"after", privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT)
        assert "p1.png" in [path.name for path in stored_traces(stack, subject.subject_id)]
        await client.wait_for_certificate(deletion.deletion_id, timeout_s=60)
    finally:
        await vault.close()
        await bus.close()
    assert stored_traces(stack, subject.subject_id) == []
    assert await nats_traces(stack, subject.subject_id) == []  # nor a lease naming it


async def test_a_key_answered_after_the_deletion_arrived_is_not_cached(
    client: StudioClient, stack: EmbeddedStack
) -> None:
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[1], REFERENCE)])
    vault = VaultClient.from_token_file(stack.addresses["privacy"], stack.paths.token_file("renderer"))
    try:
        asking = asyncio.create_task(
            vault.data_key("default", subject.subject_id, privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT))
        await asyncio.sleep(0)  # the request is on its way
        vault.forget_subject(subject.subject_id)  # the deletion's broadcast arrives meanwhile
        await asking
        assert not vault.holds_key_of(subject.subject_id)
        await vault.data_key("default", subject.subject_id, privacy_pb2.KEY_PURPOSE_ENCRYPT_PORTRAIT)
        assert vault.holds_key_of(subject.subject_id)  # a request sent after the forget is cached as before
    finally:
        await vault.close()


async def test_revocation_starts_deletion(client: StudioClient, stack: EmbeddedStack) -> None:
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[0], REFERENCE)])
    deletion = await client.revoke_consent(subject.subject_id)
    assert deletion.reason == privacy_pb2.DELETION_REASON_CONSENT_REVOKED
    deletion = await client.wait_for_certificate(deletion.deletion_id, timeout_s=60)
    assert json.loads(deletion.certificate)["reason"] == "DELETION_REASON_CONSENT_REVOKED"
    assert await vault_key_status(stack, subject.subject_id) == grpc.StatusCode.NOT_FOUND
    assert stored_traces(stack, subject.subject_id) == []


async def test_foreign_tenant_cannot_delete_or_see_deletions(client: StudioClient, stack: EmbeddedStack) -> None:
    subject = await client.create_subject()
    bus = await Bus.connect(stack.nats.url, name="test")
    await ensure_tenant(bus, "intruder", "Intruder", "sk_intruder_key")
    await bus.close()
    intruder = StudioClient(stack.public_endpoint, "sk_intruder_key")
    try:
        await expect_not_found(intruder.delete_subject(subject.subject_id))
        await expect_not_found(intruder.revoke_consent(subject.subject_id))
        deletion = await client.delete_subject(subject.subject_id)
        await expect_not_found(intruder.get_deletion(deletion_id=deletion.deletion_id))
        await expect_not_found(intruder.get_deletion(subject_id=subject.subject_id))
    finally:
        await intruder.close()
    await expect_not_found(client.delete_subject("subj_unknown"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.get_deletion()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def studio_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180)


async def test_cli_delete_wait_and_verify(client: StudioClient, stack: EmbeddedStack, tmp_path: Path) -> None:
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[1], REFERENCE)])
    result = await asyncio.to_thread(
        studio_cli, "subjects", "delete", subject.subject_id, "--wait", "--json", "--out", str(tmp_path),
        "--endpoint", stack.public_endpoint, "--api-key-file", str(stack.paths.api_key_file),
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["state"] == "DELETION_STATE_CERTIFIED" and output["confirmations"]["faceqa"]["crops"] == 1
    certificate = Path(output["certificate"])
    key = str(stack.paths.public_key_file)
    verified = await asyncio.to_thread(studio_cli, "certificate", "verify", str(certificate), "--public-key", key,
                                       "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["subject_id"] == subject.subject_id
    certificate.write_text(certificate.read_text().replace(subject.subject_id, "subj_someone_else"))
    forged = await asyncio.to_thread(studio_cli, "certificate", "verify", str(certificate), "--public-key", key)
    assert forged.returncode == 1 and "NOT valid" in forged.stderr


async def test_cli_refusals_end_in_one_line_with_the_status_and_reason(stack: EmbeddedStack, tmp_path: Path) -> None:
    tenant = ("--endpoint", stack.public_endpoint, "--api-key-file", str(stack.paths.api_key_file))
    unknown = await asyncio.to_thread(studio_cli, "subjects", "delete", "subj_nobody", *tenant)
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip() == "error: NOT_FOUND: subject 'subj_nobody' not found"
    as_json = await asyncio.to_thread(studio_cli, "subjects", "delete", "subj_nobody", *tenant, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "error": "NOT_FOUND: subject 'subj_nobody' not found"}
    wrong_token = tmp_path / "wrong.token"
    wrong_token.write_text("not-the-operator")
    refused = await asyncio.to_thread(studio_cli, "keys", "rotate", "--data", str(stack.data_dir),
                                      "--token-file", str(wrong_token))
    assert refused.returncode == 1 and refused.stderr.startswith("error: UNAUTHENTICATED: ")
    assert "Traceback" not in refused.stderr and "not-the-operator" not in refused.stderr
    no_key = await asyncio.to_thread(studio_cli, "subjects", "delete", "subj_nobody", "--endpoint",
                                     stack.public_endpoint, "--api-key-file", str(tmp_path / "absent.key"))
    assert no_key.returncode == 1 and f"no API key file at {tmp_path / 'absent.key'}" in no_key.stderr
    assert "Traceback" not in no_key.stderr


async def test_a_service_down_purges_on_return_and_a_killed_vault_resumes(
    client: StudioClient, stack: EmbeddedStack
) -> None:
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[2], REFERENCE)])
    trainer = stack.processes["trainer"]
    trainer.stop()
    try:
        deletion = await client.delete_subject(subject.subject_id)
        for _ in range(100):  # the others confirm once the data key can be cached nowhere (a few seconds)
            deletion = await client.get_deletion(deletion_id=deletion.deletion_id)
            if list(deletion.waiting_for) == ["trainer"]:
                break
            await asyncio.sleep(0.1)
        assert deletion.state != CERTIFIED and list(deletion.waiting_for) == ["trainer"]
        stack.processes["privacy"].kill()
        await restart(stack, "privacy")
        assert await vault_key_status(stack, subject.subject_id) == grpc.StatusCode.NOT_FOUND
    finally:
        await restart(stack, "trainer")
    deletion = await client.wait_for_certificate(deletion.deletion_id, timeout_s=60)
    assert [c.service for c in deletion.confirmations][-1] == "trainer"
    assert await vault_key_status(stack, subject.subject_id) == grpc.StatusCode.NOT_FOUND
    assert stored_traces(stack, subject.subject_id) == []


async def restart(stack: EmbeddedStack, service: str) -> None:
    process = stack.processes[service]
    if not process.is_running():
        process.restart()
    await process.wait_ready(lambda: grpc_healthy(stack.addresses[service]), timeout=120)


async def test_operator_rotates_keys_and_audits(client: StudioClient, stack: EmbeddedStack, tmp_path: Path) -> None:
    subject = await client.create_subject()
    await client.upload(subject.subject_id, [(faces("lisa")[3], REFERENCE)])
    data = str(stack.data_dir)
    rotated = await asyncio.to_thread(studio_cli, "keys", "rotate", "--data", data, "--json")
    assert rotated.returncode == 0, rotated.stderr
    rotation = json.loads(rotated.stdout)
    assert rotation["keys_rewrapped"] >= 1 and rotation["new_version"] - 1 in rotation["retired_versions"]
    # Data sealed before the rotation still opens: the data keys did not change, only their wrapping.
    await client.upload(subject.subject_id, [(faces("lisa")[4], REFERENCE)])

    verified = await asyncio.to_thread(studio_cli, "audit", "verify", "--data", data, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout
    export = tmp_path / "audits" / "audit.jsonl"  # the folder is made
    exported = await asyncio.to_thread(studio_cli, "audit", "export", "--data", data, "--out", str(export))
    assert exported.returncode == 0, exported.stderr
    assert [path.name for path in export.parent.iterdir()] == ["audit.jsonl"]  # no stand-in left
    lines = export.read_text().splitlines()
    assert any('"RotateKek"' in line for line in lines)
    as_json = await asyncio.to_thread(studio_cli, "audit", "export", "--data", data, "--json")  # one document
    assert as_json.returncode == 0 and as_json.stderr == "", as_json.stderr
    entries = [line for line in map(json.loads, lines) if line["type"] == "entry"]
    assert audit_entries(json.loads(as_json.stdout)["records"])[: len(entries)] == entries
    as_lines = await asyncio.to_thread(studio_cli, "audit", "export", "--data", data)  # JSON lines, progress aside
    assert audit_entries(map(json.loads, as_lines.stdout.splitlines()))[: len(entries)] == entries
    assert "fetching audit records" in as_lines.stderr
    for secret in [stack.paths.api_key_file.read_text(), *json.loads(stack.paths.tokens_file.read_text()).values()]:
        assert secret.strip() not in export.read_text()
    tampered = [json.loads(line) for line in lines]
    entries = [record for record in tampered if record["type"] == "entry"]
    entries[2]["outcome"] = "ALLOWED" if entries[2]["outcome"] != "ALLOWED" else "DENIED_POLICY"
    export.write_text("".join(json.dumps(record) + "\n" for record in tampered))
    key = str(stack.paths.public_key_file)
    broken = await asyncio.to_thread(studio_cli, "audit", "verify", "--file", str(export), "--public-key", key)
    assert broken.returncode == 1 and "BROKEN at entry 3" in broken.stdout


def audit_entries(records) -> list[dict]:
    return [record for record in records if record["type"] == "entry"]


async def test_retention_defaults_to_the_tenant_and_is_bounded(client: StudioClient) -> None:
    scopes = [common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION]
    unspecified = common_pb2.ConsentRecord(agreement_version="2026-01", scopes=scopes)
    subject = await client.create_subject(consent=unspecified)
    assert subject.consent.retention_days == 90  # no tenant default set: the studio's
    chosen = common_pb2.ConsentRecord(agreement_version="2026-01", scopes=unspecified.scopes, retention_days=7)
    assert (await client.create_subject(consent=chosen)).consent.retention_days == 7
    too_long = common_pb2.ConsentRecord(agreement_version="2026-01", scopes=unspecified.scopes, retention_days=4000)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.create_subject(consent=too_long)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "retention_days" in raised.value.details()
