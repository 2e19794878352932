"""The public Studio API: one verb per module, composed here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
from studio.v1 import studio_pb2_grpc

from services.common.deletion_guard import SubjectDeleted
from services.ingest.cancel_order import cancel_order
from services.ingest.context import IngestContext
from services.ingest.create_order import create_order
from services.ingest.create_subject import create_subject, get_subject
from services.ingest.delete_subject import delete_subject, get_deletion, revoke_consent
from services.ingest.download_portrait import download_portrait
from services.ingest.export_subject import export_subject
from services.ingest.fields import subject_not_found
from services.ingest.get_order import get_order, watch_order
from services.ingest.list_styles import list_styles
from services.ingest.listing import list_orders, list_subjects
from services.ingest.upload_photos import upload_photos

T = TypeVar("T")


async def _deleted_is_missing(call: Awaitable[T], context: grpc.aio.ServicerContext) -> T:
    """A subject whose deletion is being purged (the sealed store refuses it) answers like a missing one."""
    try:
        return await call
    except SubjectDeleted as deleted:
        await context.abort(grpc.StatusCode.NOT_FOUND, subject_not_found(deleted.subject_id))


async def _deleted_is_missing_streamed(
    stream: AsyncIterator[T], context: grpc.aio.ServicerContext
) -> AsyncIterator[T]:
    try:
        async for response in stream:
            yield response
    except SubjectDeleted as deleted:
        await context.abort(grpc.StatusCode.NOT_FOUND, subject_not_found(deleted.subject_id))


class StudioServicer(studio_pb2_grpc.StudioServicer):
    def __init__(self, ctx: IngestContext) -> None:
        self.ctx = ctx

    async def CreateSubject(self, request, context):
        return await create_subject(self.ctx, request, context)

    async def GetSubject(self, request, context):
        return await get_subject(self.ctx, request, context)

    async def UploadPhotos(self, request_iterator, context):
        return await _deleted_is_missing(upload_photos(self.ctx, request_iterator, context), context)

    async def CreateOrder(self, request, context):
        return await create_order(self.ctx, request, context)

    async def GetOrder(self, request, context):
        return await get_order(self.ctx, request, context)

    async def WatchOrder(self, request, context):
        async for response in watch_order(self.ctx, request, context):
            yield response

    async def DownloadPortrait(self, request, context):
        async for response in _deleted_is_missing_streamed(download_portrait(self.ctx, request, context), context):
            yield response

    async def DeleteSubject(self, request, context):
        return await delete_subject(self.ctx, request, context)

    async def RevokeConsent(self, request, context):
        return await revoke_consent(self.ctx, request, context)

    async def GetDeletion(self, request, context):
        return await get_deletion(self.ctx, request, context)

    async def CancelOrder(self, request, context):
        return await cancel_order(self.ctx, request, context)

    async def ExportSubject(self, request, context):
        async for response in _deleted_is_missing_streamed(export_subject(self.ctx, request, context), context):
            yield response

    async def ListSubjects(self, request, context):
        return await list_subjects(self.ctx, request, context)

    async def ListOrders(self, request, context):
        return await list_orders(self.ctx, request, context)

    async def ListStyles(self, request, context):
        return await list_styles(self.ctx, request, context)
