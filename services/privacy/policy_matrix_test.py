"""The policy matrix over a real socket: every service × every key purpose, and every privileged verb,
allowed exactly where the issue says and otherwise PERMISSION_DENIED and audited."""

from __future__ import annotations

import json

import grpc
from studio.v1 import privacy_pb2

from services.common.audit_chain import ENTRY_FIELDS
from services.common.provenance_certs import DevChainFiles, write_dev_chain
from services.privacy.provenance_key import ProvenanceKey
from services.privacy.server_test import (
    TOKENS,
    Running,
    audit_rows,
    data_key,
    expect_status,
    register,
    token,
    vault,  # noqa: F401  (fixture)
)

P = privacy_pb2.KeyPurpose
# Written out from the issue, independently of policy.py, so a drift in the table fails here.
EXPECTED_PURPOSES = {
    "ingest": {P.KEY_PURPOSE_ENCRYPT_UPLOAD, P.KEY_PURPOSE_DECRYPT_PORTRAIT, P.KEY_PURPOSE_EXPORT_SUBJECT},
    "faceqa": {P.KEY_PURPOSE_DECRYPT_PHOTO, P.KEY_PURPOSE_ENCRYPT_CROP},
    "trainer": {P.KEY_PURPOSE_DECRYPT_CROP, P.KEY_PURPOSE_ENCRYPT_LORA, P.KEY_PURPOSE_TRAINER_CHECKPOINT},
    "renderer": {P.KEY_PURPOSE_DECRYPT_LORA, P.KEY_PURPOSE_ENCRYPT_PORTRAIT, P.KEY_PURPOSE_DECRYPT_CROP},
    "operator": set(),
}
DELETION_VERBS = {"ingest"}
SUBJECT_AUDIT_VERBS = {"ingest"}
ADMIN_VERBS = {"operator"}


async def test_every_service_and_purpose(vault: Running) -> None:  # noqa: F811
    await register(vault.stub)
    denied = 0
    for service in TOKENS:
        for purpose in P.values():
            if purpose == P.KEY_PURPOSE_UNSPECIFIED:
                continue
            call = data_key(vault.stub, purpose=purpose, service=service)
            if purpose in EXPECTED_PURPOSES[service]:
                assert len((await call).data_key) == 32, (service, P.Name(purpose))
            else:
                details = await expect_status(call, grpc.StatusCode.PERMISSION_DENIED)
                assert service in details and P.Name(purpose) in details
                denied += 1
    rows = [row for row in audit_rows(vault.data_dir) if row[3] == "GetDataKey"]
    assert sum(1 for row in rows if row[7] == "DENIED_POLICY") == denied == 10 * 5 - 11
    assert {(row[2], row[6]) for row in rows if row[7] == "ALLOWED"} == {
        (service, P.Name(purpose)) for service, purposes in EXPECTED_PURPOSES.items() for purpose in purposes
    }


def verb_calls(stub, service: str, subject: str) -> dict:
    """Each privileged verb as a zero-argument call, made as `service` about `subject`."""
    metadata = token(service)
    return {
        "RegisterSubject": lambda: register(stub, subject=f"new-{service}", service=service),
        "GetDeletionStatus": lambda: stub.GetDeletionStatus(privacy_pb2.GetDeletionStatusRequest(
            tenant_id="tenant-a", subject_id=subject), metadata=metadata, timeout=10),
        "ShredSubject": lambda: stub.ShredSubject(privacy_pb2.ShredSubjectRequest(
            tenant_id="tenant-a", subject_id=subject), metadata=metadata, timeout=10),
        "RotateKek": lambda: stub.RotateKek(privacy_pb2.RotateKekRequest(), metadata=metadata, timeout=30),
    }


async def test_privileged_verbs(vault: Running) -> None:  # noqa: F811
    stub = vault.stub
    for index, service in enumerate(TOKENS):
        subject = f"subject-verbs-{index}"
        await register(stub, subject=subject)
        calls = verb_calls(stub, service, subject)
        allowed = {
            "RegisterSubject": service == "ingest",
            "GetDeletionStatus": service in DELETION_VERBS,
            "ShredSubject": service in DELETION_VERBS,
            "RotateKek": service in ADMIN_VERBS,
        }
        for verb, call in calls.items():
            if allowed[verb]:
                if verb == "GetDeletionStatus":  # no deletion yet: allowed, but nothing to show
                    await expect_status(call(), grpc.StatusCode.NOT_FOUND)
                else:
                    await call()
            else:
                await expect_status(call(), grpc.StatusCode.PERMISSION_DENIED)
        subject_audit = stub.ExportSubjectAudit(privacy_pb2.ExportSubjectAuditRequest(
            tenant_id="tenant-a", subject_id=subject), metadata=token(service), timeout=10)
        if service in SUBJECT_AUDIT_VERBS:
            entries = [json.loads(item.json) async for item in subject_audit]
            assert entries and {entry["subject_id"] for entry in entries} == {subject}
            assert {name for entry in entries for name in entry} == {  # entry fields only, never key material
                "type", "seq", "at", *ENTRY_FIELDS, "prev_hash", "hash"}
        else:
            await expect_status(_drain(subject_audit), grpc.StatusCode.PERMISSION_DENIED)
        export = stub.ExportAudit(privacy_pb2.ExportAuditRequest(), metadata=token(service), timeout=10)
        if service in ADMIN_VERBS:
            assert [record async for record in export]
        else:
            await expect_status(_drain(export), grpc.StatusCode.PERMISSION_DENIED)
    denials = {(row[2], row[3]) for row in audit_rows(vault.data_dir) if row[7] == "DENIED_POLICY"}
    assert ("operator", "ShredSubject") in denials and ("renderer", "RotateKek") in denials
    assert ("faceqa", "ExportAudit") in denials and ("operator", "ExportSubjectAudit") in denials
    assert ("faceqa", "ExportAudit") in denials and ("trainer", "RegisterSubject") in denials


async def _drain(stream) -> None:
    async for _ in stream:
        pass


PROVENANCE_SIGNERS = {"renderer"}


async def test_only_the_renderer_may_sign_provenance(vault: Running, tmp_path) -> None:  # noqa: F811
    files = DevChainFiles(tmp_path / "p.key", tmp_path / "chain.pem", tmp_path / "root.pem")
    write_dev_chain(files)
    vault.servicer.provenance = ProvenanceKey.from_files(files.key, files.chain)
    for service in TOKENS:
        sign = vault.stub.SignProvenance(privacy_pb2.SignProvenanceRequest(tenant_id="tenant-a", payload=b"claim"),
                                         metadata=token(service), timeout=10)
        prepare = vault.stub.PrepareProvenance(privacy_pb2.PrepareProvenanceRequest(
            tenant_id="tenant-a", order_id="order-1"), metadata=token(service), timeout=10)
        if service in PROVENANCE_SIGNERS:
            assert len((await sign).signature) == 64
            assert "BEGIN CERTIFICATE" in (await prepare).certificate_chain_pem
        else:
            for call in (sign, prepare):
                assert "provenance" in await expect_status(call, grpc.StatusCode.PERMISSION_DENIED)
    rows = [row for row in audit_rows(vault.data_dir) if row[3] in ("SignProvenance", "PrepareProvenance")]
    assert {(row[2], row[7]) for row in rows if row[3] == "SignProvenance"} == {
        (service, "ALLOWED" if service in PROVENANCE_SIGNERS else "DENIED_POLICY") for service in TOKENS
    }
    assert all(row[5] == "" for row in rows)  # no signing record names a subject: nothing for a deletion to purge
    await expect_status(vault.stub.SignProvenance(privacy_pb2.SignProvenanceRequest(tenant_id="tenant-a"),
                                                  metadata=token("renderer"), timeout=10),
                        grpc.StatusCode.INVALID_ARGUMENT)
    no_order = vault.stub.PrepareProvenance(privacy_pb2.PrepareProvenanceRequest(tenant_id="tenant-a"),
                                            metadata=token("renderer"), timeout=10)
    assert "order_id" in await expect_status(no_order, grpc.StatusCode.INVALID_ARGUMENT)
    vault.servicer.provenance = None
    unconfigured = vault.stub.SignProvenance(privacy_pb2.SignProvenanceRequest(tenant_id="tenant-a", payload=b"x"),
                                             metadata=token("renderer"), timeout=10)
    details = await expect_status(unconfigured, grpc.StatusCode.FAILED_PRECONDITION)
    assert "STUDIO_PROVENANCE_KEY_FILE" in details
