"""DownloadPortrait: decrypted for the owning tenant only, streamed in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from studio.v1 import privacy_pb2, studio_pb2

from services.common.blobstore import BlobNotFound
from services.common.objects import portrait_key
from services.ingest import fields
from services.ingest.context import IngestContext

CHUNK_BYTES = 64 * 1024


async def download_portrait(
    ctx: IngestContext, request: studio_pb2.DownloadPortraitRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[studio_pb2.DownloadPortraitResponse]:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_order(tenant, request.order_id, context)
    order = record.order
    portrait = next((p for p in order.portraits if p.portrait_id == request.portrait_id), None)
    shown = fields.shown_id(request.portrait_id)
    if portrait is None:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"portrait '{shown}' not found in this order")
    key = portrait_key(tenant.tenant_id, order.subject_id, order.order_id, portrait.portrait_id)
    try:
        image = await ctx.sealed.get(
            tenant.tenant_id, order.subject_id, key, privacy_pb2.KEY_PURPOSE_DECRYPT_PORTRAIT
        )
    except BlobNotFound:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"portrait '{shown}' is no longer stored")
    yield studio_pb2.DownloadPortraitResponse(
        info=studio_pb2.PortraitInfo(portrait=portrait, content_type="image/png", size_bytes=len(image))
    )
    for offset in range(0, len(image), CHUNK_BYTES):
        yield studio_pb2.DownloadPortraitResponse(chunk=image[offset : offset + CHUNK_BYTES])
