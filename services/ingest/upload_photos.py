"""UploadPhotos: client-streamed photos, sealed under the subject's key before they touch storage,
checked by faceqa, a verdict per photo. Bad input stores nothing; a stream is all or nothing.

Resumable: a photo sent with a client_photo_id that the subject already has (an earlier stream got
through, its reply did not) is not stored or checked again; it comes back with already_uploaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from studio.v1 import common_pb2, faceqa_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common.image_formats import SIGNATURE_BYTES, is_image_signature
from services.common.objects import crop_key, new_id, photo_key
from services.ingest import fields, quotas
from services.ingest.context import IngestContext

MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS_PER_STREAM = 60
# The whole stream is held before anything is stored (all or nothing), so bound it.
MAX_STREAM_BYTES = 256 * 1024 * 1024
UPLOAD_BYTES_QUOTA = "max_upload_bytes_per_day"
ROLES = (common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE)


class UploadError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class IncomingPhoto:
    header: studio_pb2.PhotoHeader
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_PHOTO_BYTES:
            raise UploadError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"photo '{self.header.filename}' exceeds {MAX_PHOTO_BYTES // (1024 * 1024)} MiB",
            )
        self.chunks.append(chunk)


async def _collect(requests: AsyncIterator[studio_pb2.UploadPhotosRequest]) -> list[IncomingPhoto]:
    """Read the whole stream first, so a malformed stream stores nothing at all."""
    photos: list[IncomingPhoto] = []
    stream_bytes = 0
    client_ids: set[str] = set()
    async for request in requests:
        if request.HasField("header"):
            _validate_header(request.header)
            client_id = request.header.client_photo_id
            if client_id and client_id in client_ids:
                raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, f"client_photo_id {client_id!r} repeats")
            client_ids.add(client_id)
            if len(photos) >= MAX_PHOTOS_PER_STREAM:
                raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_PHOTOS_PER_STREAM} photos")
            photos.append(IncomingPhoto(request.header))
        elif request.HasField("chunk"):
            if not photos:
                raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, "stream must start with a photo header")
            photos[-1].add(request.chunk)
            stream_bytes += len(request.chunk)
            if stream_bytes > MAX_STREAM_BYTES:
                raise UploadError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"one upload stream carries at most {MAX_STREAM_BYTES // (1024 * 1024)} MiB; split the set",
                )
    if not photos:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, "empty upload: no photo header received")
    for photo in photos:
        _validate_content(photo)
    return photos


def _validate_header(header: studio_pb2.PhotoHeader) -> None:
    if not header.subject_id:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, "photo header needs subject_id")
    if header.role not in ROLES:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, "photo header needs role HEADSHOT or REFERENCE")
    if not header.filename:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, "photo header needs a filename")
    problem = fields.filename_problem(header.filename) or fields.too_long(
        "client_photo_id", header.client_photo_id, fields.MAX_CLIENT_PHOTO_ID_CHARS
    )
    if problem:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, problem)


def _validate_content(photo: IncomingPhoto) -> None:
    name = photo.header.filename
    if photo.size == 0:
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, f"photo '{name}' has no bytes")
    if not is_image_signature(b"".join(photo.chunks)[:SIGNATURE_BYTES]):
        raise UploadError(grpc.StatusCode.INVALID_ARGUMENT, f"'{name}' is not a JPEG, PNG, WebP or HEIC image")


async def upload_photos(
    ctx: IngestContext, requests: AsyncIterator[studio_pb2.UploadPhotosRequest], context: grpc.aio.ServicerContext
) -> studio_pb2.UploadPhotosResponse:
    tenant = await ctx.authenticate(context)
    try:
        photos = await _collect(requests)
    except UploadError as error:
        await context.abort(error.code, error.reason)
    subject_ids = {photo.header.subject_id for photo in photos}
    if len(subject_ids) != 1:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one upload stream carries one subject's photos")
    record = await ctx.owned_subject(tenant, subject_ids.pop(), context)
    earlier = {p.client_photo_id: p for p in record.subject.photos if p.client_photo_id}
    fresh = [photo for photo in photos if photo.header.client_photo_id not in earlier]
    fresh_bytes = sum(photo.size for photo in fresh)
    try:
        quotas.check_photos_per_subject(tenant, len(record.subject.photos), len(fresh))
        if fresh:
            await quotas.reserve_daily(ctx.bus, tenant, UPLOAD_BYTES_QUOTA, fresh_bytes, "byte(s)")
    except quotas.QuotaExceeded as error:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    set_verdict = record.subject.set_verdict
    checked: dict[str, studio_pb2.PhotoSummary] = {}
    if fresh:
        try:
            stored = await _store_and_check(ctx, tenant, record, fresh)
        except BaseException:
            await quotas.release_daily(ctx.bus, tenant, UPLOAD_BYTES_QUOTA, fresh_bytes)
            raise
        # Once checked, the photos are kept even if the caller hangs up now: its retry finds them.
        set_verdict = await asyncio.shield(_commit(ctx, record.subject.subject_id, stored))
        checked = {id(photo): item.summary for photo, item in zip(fresh, stored.items, strict=True)}
    return studio_pb2.UploadPhotosResponse(photos=_in_stream_order(photos, checked, earlier), set_verdict=set_verdict)


def _in_stream_order(
    photos: list[IncomingPhoto], checked: dict, earlier: dict[str, studio_pb2.PhotoSummary]
) -> list[studio_pb2.PhotoSummary]:
    summaries = []
    for photo in photos:
        if id(photo) in checked:
            summaries.append(checked[id(photo)])
            continue
        repeat = studio_pb2.PhotoSummary()
        repeat.CopyFrom(earlier[photo.header.client_photo_id])
        repeat.already_uploaded = True
        summaries.append(repeat)
    return summaries


@dataclass
class CheckedPhoto:
    summary: studio_pb2.PhotoSummary
    object_key: str
    crop_key: str  # '' when refused


@dataclass
class CheckedSet:
    items: list[CheckedPhoto]
    set_verdict: common_pb2.SetVerdict


async def _store_and_check(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, record: state_pb2.SubjectRecord, photos: list[IncomingPhoto]
) -> CheckedSet:
    """Seal every photo and let faceqa judge them with the subject's accepted photos."""
    tenant_id, subject_id = tenant.tenant_id, record.subject.subject_id
    stored = [_stored_photo(tenant_id, subject_id, photo.header.role) for photo in photos]
    written: list[str] = []
    try:
        for photo, sent in zip(photos, stored, strict=True):
            await ctx.sealed.put(
                tenant_id, subject_id, sent.object_key, b"".join(photo.chunks), privacy_pb2.KEY_PURPOSE_ENCRYPT_UPLOAD
            )
            written += [sent.object_key, sent.crop_key]  # faceqa writes the crop
        checked = await ctx.faceqa.CheckPhotoSet(
            faceqa_pb2.CheckPhotoSetRequest(
                tenant_id=tenant_id, subject_id=subject_id, photos=stored, accepted_photos=_accepted(record),
                crop_size=ctx.base_resolution, min_accepted_photos=ctx.min_accepted_for(tenant),
                max_photo_age_days=tenant.max_photo_age_days,
            ),
            timeout=60 + 5 * len(photos),
        )
    except BaseException:
        for key in written:  # all or nothing: a failed upload keeps none of its photos
            await ctx.sealed.blobs.delete(key)
        raise
    items = []
    for photo, sent, result in zip(photos, stored, checked.photos, strict=True):
        summary = studio_pb2.PhotoSummary(
            photo_id=sent.photo_id, filename=photo.header.filename, role=photo.header.role,
            verdict=result.verdict, size_bytes=photo.size, client_photo_id=photo.header.client_photo_id,
        )
        items.append(CheckedPhoto(summary, sent.object_key, result.crop_key if result.verdict.accepted else ""))
    return CheckedSet(items, checked.set_verdict)


async def _commit(ctx: IngestContext, subject_id: str, checked: CheckedSet) -> common_pb2.SetVerdict:
    """Add the checked photos to the subject; a photo a concurrent twin stream committed first (same
    client_photo_id) and every refused photo are not kept (data minimisation: the verdict is)."""
    dropped: list[CheckedPhoto] = []

    def merge(record: state_pb2.SubjectRecord) -> None:
        dropped.clear()
        known = {p.client_photo_id for p in record.subject.photos if p.client_photo_id}
        for item in checked.items:
            if item.summary.client_photo_id and item.summary.client_photo_id in known:
                dropped.append(item)
                continue
            record.subject.photos.append(item.summary)
            if item.crop_key:
                record.crop_keys[item.summary.photo_id] = item.crop_key
        record.subject.set_verdict.CopyFrom(checked.set_verdict)

    record = await ctx.update_subject(subject_id, merge)
    if record is None:  # deleted meanwhile: keep nothing
        dropped = list(checked.items)
    for item in checked.items:
        if item in dropped:
            await ctx.sealed.blobs.delete(item.object_key)
            if item.crop_key:
                await ctx.sealed.blobs.delete(item.crop_key)
        elif not item.crop_key:
            await ctx.sealed.blobs.delete(item.object_key)
    return checked.set_verdict


def _stored_photo(tenant_id: str, subject_id: str, role: int) -> faceqa_pb2.StoredPhoto:
    photo_id = new_id("photo")
    return faceqa_pb2.StoredPhoto(
        photo_id=photo_id, object_key=photo_key(tenant_id, subject_id, photo_id), role=role,
        crop_key=crop_key(tenant_id, subject_id, photo_id),
    )


def _accepted(record: state_pb2.SubjectRecord) -> list[faceqa_pb2.StoredPhoto]:
    tenant_id, subject_id = record.tenant_id, record.subject.subject_id
    return [
        faceqa_pb2.StoredPhoto(
            photo_id=p.photo_id, object_key=photo_key(tenant_id, subject_id, p.photo_id), role=p.role
        )
        for p in record.subject.photos if p.verdict.accepted
    ]
