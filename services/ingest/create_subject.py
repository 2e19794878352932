"""CreateSubject: nothing about a person is kept before their consent is recorded by the vault."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import common_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.objects import new_id
from services.ingest import fields, idempotency, quotas
from services.ingest.context import IngestContext
from services.ingest.listing import add_to_index, subject_index_key

MAX_RETENTION_DAYS = 3650
# Retention when neither the consent nor the tenant names one: long enough to order again later.
DEFAULT_RETENTION_DAYS = 90


def _retention_days(consent: common_pb2.ConsentRecord, tenant: state_pb2.TenantRecord) -> int:
    """The per-subject value overrides the tenant's default."""
    return consent.retention_days or tenant.default_retention_days or DEFAULT_RETENTION_DAYS


def _subject_problem(
    request: studio_pb2.CreateSubjectRequest, tenant: state_pb2.TenantRecord
) -> tuple[grpc.StatusCode, str] | None:
    if not request.HasField("consent"):
        return grpc.StatusCode.INVALID_ARGUMENT, "consent record is required"
    problem = idempotency.key_problem(request) or fields.too_long(
        "external_ref", request.external_ref, fields.MAX_EXTERNAL_REF_CHARS
    )
    if problem:
        return grpc.StatusCode.INVALID_ARGUMENT, problem
    return _consent_problem(request.consent, _retention_days(request.consent, tenant))


def _consent_problem(consent: common_pb2.ConsentRecord, retention_days: int) -> tuple[grpc.StatusCode, str] | None:
    if not consent.agreement_version:
        return grpc.StatusCode.INVALID_ARGUMENT, "consent.agreement_version is required"
    problem = fields.too_long(
        "consent.agreement_version", consent.agreement_version, fields.MAX_AGREEMENT_VERSION_CHARS
    )
    if problem:
        return grpc.StatusCode.INVALID_ARGUMENT, problem
    if consent.retention_days > MAX_RETENTION_DAYS:
        return grpc.StatusCode.INVALID_ARGUMENT, (
            f"consent.retention_days must be 1..{MAX_RETENTION_DAYS} (0: the tenant's default)"
        )
    if common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION not in consent.scopes:
        return grpc.StatusCode.FAILED_PRECONDITION, "consent must include CONSENT_SCOPE_PORTRAIT_GENERATION"
    if consent.HasField("granted_at"):  # unset: the time of registration
        problem = fields.granted_at_problem(consent.granted_at, retention_days)
        if problem:
            return grpc.StatusCode.INVALID_ARGUMENT, problem
    return None


async def create_subject(
    ctx: IngestContext, request: studio_pb2.CreateSubjectRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.CreateSubjectResponse:
    tenant = await ctx.authenticate(context)
    problem = _subject_problem(request, tenant)  # before anything is claimed, reserved or registered
    if problem:
        await context.abort(*problem)
    try:
        claimed = await idempotency.claim(ctx.bus, tenant.tenant_id, "subject", request, new_id("subj"))
    except idempotency.KeyReused as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    if not claimed.first:
        existing = await idempotency.wait_for(
            ctx.bus, topology.SUBJECTS_BUCKET, claimed.resource_id, state_pb2.SubjectRecord
        )
        if existing is not None:
            return studio_pb2.CreateSubjectResponse(
                subject=(await ctx.owned_subject(tenant, claimed.resource_id, context)).subject
            )
        if await idempotency.abandoned(ctx.bus, claimed):
            await context.abort(grpc.StatusCode.ABORTED, idempotency.ABANDONED)
    else:
        try:
            await quotas.reserve_daily(ctx.bus, tenant, "max_subjects_per_day", 1, "subject(s)")
        except quotas.QuotaExceeded as error:
            await idempotency.release(ctx.bus, claimed)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    subject = await _register(ctx, tenant, request, claimed)
    return studio_pb2.CreateSubjectResponse(subject=subject)


async def _register(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, request: studio_pb2.CreateSubjectRequest,
    claimed: idempotency.Claim,
) -> studio_pb2.Subject:
    """Consent with the vault first (registering the same id again is a no-op), then the views. A
    repeat of a creation that died half-way runs this again with the same id and creation time."""
    subject_id = claimed.resource_id
    consent = common_pb2.ConsentRecord()
    consent.CopyFrom(request.consent)
    if not consent.HasField("granted_at"):
        consent.granted_at.FromMilliseconds(claimed.created_ms)
    consent.retention_days = _retention_days(consent, tenant)
    try:
        await ctx.vault.stub.RegisterSubject(
            privacy_pb2.RegisterSubjectRequest(tenant_id=tenant.tenant_id, subject_id=subject_id, consent=consent),
            metadata=ctx.vault.metadata, timeout=10,
        )
    except BaseException:
        # A claimed key keeps its reservation: the key's retry completes this subject and reserves nothing.
        if claimed.first and not claimed.entry:
            await quotas.release_daily(ctx.bus, tenant, "max_subjects_per_day", 1)
        raise
    created_at = Timestamp()
    created_at.FromMilliseconds(claimed.created_ms)
    subject = studio_pb2.Subject(
        subject_id=subject_id, external_ref=request.external_ref, consent=consent, created_at=created_at
    )
    record = state_pb2.SubjectRecord(tenant_id=tenant.tenant_id, subject=subject)
    if claimed.entry:
        record.idempotency_entries.append(claimed.entry)
    # The index entry first: the record's existence is what a repeat waits for.
    await add_to_index(ctx.bus, subject_index_key(tenant.tenant_id, claimed.created_ms, subject_id))
    await ctx.bus.kv_put(topology.SUBJECTS_BUCKET, subject_id, record)
    return subject


async def get_subject(
    ctx: IngestContext, request: studio_pb2.GetSubjectRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.GetSubjectResponse:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_subject(tenant, request.subject_id, context)
    return studio_pb2.GetSubjectResponse(subject=record.subject)
