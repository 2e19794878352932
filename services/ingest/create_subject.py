"""CreateSubject: nothing about a person is kept before their consent is recorded by the vault."""

from __future__ import annotations

import hashlib

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import common_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import bus as topology
from services.common.objects import new_id
from services.ingest.context import IngestContext

MAX_RETENTION_DAYS = 3650
# Retention when neither the consent nor the tenant names one: long enough to order again later.
DEFAULT_RETENTION_DAYS = 90


def _consent_problem(consent: common_pb2.ConsentRecord) -> tuple[grpc.StatusCode, str] | None:
    if not consent.agreement_version:
        return grpc.StatusCode.INVALID_ARGUMENT, "consent.agreement_version is required"
    if consent.retention_days > MAX_RETENTION_DAYS:
        return grpc.StatusCode.INVALID_ARGUMENT, (
            f"consent.retention_days must be 1..{MAX_RETENTION_DAYS} (0: the tenant's default)"
        )
    if common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION not in consent.scopes:
        return grpc.StatusCode.FAILED_PRECONDITION, "consent must include CONSENT_SCOPE_PORTRAIT_GENERATION"
    return None


def idempotency_entry(tenant_id: str, kind: str, idempotency_key: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}\0{kind}\0{idempotency_key}".encode()).hexdigest()
    return f"{kind}.{digest}"


async def create_subject(
    ctx: IngestContext, request: studio_pb2.CreateSubjectRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.CreateSubjectResponse:
    tenant = await ctx.authenticate(context)
    if not request.HasField("consent"):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "consent record is required")
    problem = _consent_problem(request.consent)
    if problem:
        await context.abort(*problem)
    subject_id = new_id("subj")
    entry = ""
    if request.idempotency_key:
        entry = idempotency_entry(tenant.tenant_id, "subject", request.idempotency_key)
        if not await ctx.bus.kv_create(topology.IDEMPOTENCY_BUCKET, entry, subject_id.encode()):
            existing = (await ctx.bus.kv_raw(topology.IDEMPOTENCY_BUCKET, entry) or b"").decode()
            return studio_pb2.CreateSubjectResponse(
                subject=(await ctx.owned_subject(tenant, existing, context)).subject
            )
    consent = common_pb2.ConsentRecord()
    consent.CopyFrom(request.consent)
    if not consent.HasField("granted_at"):
        consent.granted_at.GetCurrentTime()
    if not consent.retention_days:  # the per-subject value overrides the tenant's default
        consent.retention_days = tenant.default_retention_days or DEFAULT_RETENTION_DAYS
    await ctx.vault.stub.RegisterSubject(
        privacy_pb2.RegisterSubjectRequest(tenant_id=tenant.tenant_id, subject_id=subject_id, consent=consent),
        metadata=ctx.vault.metadata, timeout=10,
    )
    created_at = Timestamp()
    created_at.GetCurrentTime()
    subject = studio_pb2.Subject(
        subject_id=subject_id, external_ref=request.external_ref, consent=consent, created_at=created_at
    )
    record = state_pb2.SubjectRecord(tenant_id=tenant.tenant_id, subject=subject)
    if entry:
        record.idempotency_entries.append(entry)
    await ctx.bus.kv_put(topology.SUBJECTS_BUCKET, subject_id, record)
    return studio_pb2.CreateSubjectResponse(subject=subject)


async def get_subject(
    ctx: IngestContext, request: studio_pb2.GetSubjectRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.GetSubjectResponse:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_subject(tenant, request.subject_id, context)
    return studio_pb2.GetSubjectResponse(subject=record.subject)
