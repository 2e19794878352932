"""UploadPhotos: client-streamed photos, sealed under the subject's key before they touch storage,
checked by faceqa, a verdict per photo. Bad input stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from studio.v1 import common_pb2, faceqa_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import bus as topology
from services.common.image_formats import SIGNATURE_BYTES, is_image_signature
from services.common.objects import crop_key, new_id, photo_key
from services.ingest.context import IngestContext

MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS_PER_STREAM = 60
# The whole stream is held before anything is stored (all or nothing), so bound it.
MAX_STREAM_BYTES = 256 * 1024 * 1024
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
    async for request in requests:
        if request.HasField("header"):
            _validate_header(request.header)
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
    summaries, set_verdict = await _store_and_check(ctx, tenant, record, photos)
    await ctx.bus.kv_put(topology.SUBJECTS_BUCKET, record.subject.subject_id, record)
    return studio_pb2.UploadPhotosResponse(photos=summaries, set_verdict=set_verdict)


async def _store_and_check(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, record: state_pb2.SubjectRecord, photos: list[IncomingPhoto]
) -> tuple[list[studio_pb2.PhotoSummary], common_pb2.SetVerdict]:
    """Seal every photo, let faceqa judge them with the subject's accepted photos, keep the accepted."""
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
    summaries = []
    for photo, sent, result in zip(photos, stored, checked.photos, strict=True):
        if result.verdict.accepted:
            record.crop_keys[sent.photo_id] = result.crop_key
        else:
            # Data minimisation: a refused photo is not kept; its verdict is.
            await ctx.sealed.blobs.delete(sent.object_key)
        summaries.append(studio_pb2.PhotoSummary(
            photo_id=sent.photo_id, filename=photo.header.filename, role=photo.header.role,
            verdict=result.verdict, size_bytes=photo.size,
        ))
    record.subject.photos.extend(summaries)
    record.subject.set_verdict.CopyFrom(checked.set_verdict)
    return summaries, checked.set_verdict


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
