"""DeleteSubject, RevokeConsent and GetDeletion: deletion as a tenant sees it.

The vault shreds the subject's key before DeleteSubject returns; services purge in the background
and the vault signs a certificate once all have confirmed (GetDeletion shows the progress). A
deleted subject answers NOT_FOUND everywhere; its deletion stays visible to its tenant."""

from __future__ import annotations

import grpc
from studio.v1 import privacy_pb2, studio_pb2

from services.ingest.context import IngestContext


def _public(deletion: privacy_pb2.Deletion) -> privacy_pb2.Deletion:
    public = privacy_pb2.Deletion()
    public.CopyFrom(deletion)
    public.tenant_id = ""
    return public


async def _deletion_status(
    ctx: IngestContext, tenant_id: str, *, deletion_id: str = "", subject_id: str = ""
) -> privacy_pb2.Deletion | None:
    """The tenant's deletion by id or by subject, or None when it has none."""
    try:
        response = await ctx.vault.stub.GetDeletionStatus(
            privacy_pb2.GetDeletionStatusRequest(tenant_id=tenant_id, deletion_id=deletion_id, subject_id=subject_id),
            metadata=ctx.vault.metadata, timeout=10,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return response.deletion


async def _start(ctx: IngestContext, request, context, revoke: bool) -> privacy_pb2.Deletion:
    tenant = await ctx.authenticate(context)
    if not request.subject_id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "subject_id is required")
    await ctx.check_subject_id(request.subject_id, context)
    # A repeated request (the first one's reply lost) returns the same deletion.
    existing = await _deletion_status(ctx, tenant.tenant_id, subject_id=request.subject_id)
    if existing is not None:
        return _public(existing)
    await ctx.owned_subject(tenant, request.subject_id, context)
    if revoke:
        response = await ctx.vault.stub.RecordRevocation(
            privacy_pb2.RecordRevocationRequest(tenant_id=tenant.tenant_id, subject_id=request.subject_id),
            metadata=ctx.vault.metadata, timeout=30,
        )
    else:
        response = await ctx.vault.stub.ShredSubject(
            privacy_pb2.ShredSubjectRequest(
                tenant_id=tenant.tenant_id, subject_id=request.subject_id,
                reason=privacy_pb2.DELETION_REASON_REQUESTED,
            ),
            metadata=ctx.vault.metadata, timeout=30,
        )
    return _public(response.deletion)


async def delete_subject(
    ctx: IngestContext, request: studio_pb2.DeleteSubjectRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.DeleteSubjectResponse:
    return studio_pb2.DeleteSubjectResponse(deletion=await _start(ctx, request, context, revoke=False))


async def revoke_consent(
    ctx: IngestContext, request: studio_pb2.RevokeConsentRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.RevokeConsentResponse:
    return studio_pb2.RevokeConsentResponse(deletion=await _start(ctx, request, context, revoke=True))


async def get_deletion(
    ctx: IngestContext, request: studio_pb2.GetDeletionRequest, context: grpc.aio.ServicerContext
) -> studio_pb2.GetDeletionResponse:
    tenant = await ctx.authenticate(context)
    if not (request.deletion_id or request.subject_id):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "deletion_id or subject_id is required")
    deletion = await _deletion_status(
        ctx, tenant.tenant_id, deletion_id=request.deletion_id, subject_id=request.subject_id
    )
    if deletion is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, "deletion not found")
    return studio_pb2.GetDeletionResponse(deletion=_public(deletion))
