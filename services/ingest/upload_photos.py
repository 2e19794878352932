"""UploadPhotos: client-streamed photos, sealed under the subject's key before they touch storage,
checked by faceqa, a verdict per photo. Bad input stores nothing; a stream is all or nothing.

Resumable: a photo sent with a client_photo_id that the subject already has (an earlier stream got
through, its reply did not) is not stored or checked again; it comes back with already_uploaded. A
client_photo_id sent with another photo (other bytes or role) is refused (photo_digests.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cached_property

import grpc
from studio.v1 import common_pb2, faceqa_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.image_formats import SIGNATURE_BYTES, is_image_signature
from services.common.objects import crop_key, new_id, photo_key
from services.ingest import fields, photo_digests, quotas
from services.ingest.context import IngestContext

MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS_PER_STREAM = 60
# The whole stream is held before anything is stored (all or nothing), so bound it.
MAX_STREAM_BYTES = 256 * 1024 * 1024
# Every message costs a fixed overhead whatever it carries, so bound their number too. A client is
# expected to send chunks of 16 KiB or more (studio_client sends 256 KiB) except each photo's last:
# a header and a short last chunk per photo, plus the stream's bytes in 16 KiB chunks (16,504 messages).
MIN_AVERAGE_CHUNK_BYTES = 16 * 1024
MAX_STREAM_MESSAGES = 2 * MAX_PHOTOS_PER_STREAM + MAX_STREAM_BYTES // MIN_AVERAGE_CHUNK_BYTES
UPLOAD_BYTES_QUOTA = "max_upload_bytes_per_day"
ROLES = (common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE)


class UploadError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _invalid(reason: str) -> UploadError:
    return UploadError(grpc.StatusCode.INVALID_ARGUMENT, reason)


@dataclass(eq=False)
class IncomingPhoto:
    header: studio_pb2.PhotoHeader
    data: bytearray = field(default_factory=bytearray)
    chunks: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def add(self, chunk: bytes) -> None:
        self.chunks += 1
        if not chunk:
            raise _invalid(f"chunk {self.chunks} of photo '{self.header.filename}' is empty")
        if self.size + len(chunk) > MAX_PHOTO_BYTES:
            raise _invalid(f"photo '{self.header.filename}' exceeds {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
        self.data += chunk

    @cached_property
    def fingerprint(self) -> photo_digests.Fingerprint:
        return photo_digests.fingerprint(self.header.client_photo_id, self.header.role, self.data)


@dataclass
class StreamReader:
    """The stream's photos, read message by message within the stream's bounds."""

    photos: list[IncomingPhoto] = field(default_factory=list)
    client_ids: set[str] = field(default_factory=set)
    messages: int = 0
    stream_bytes: int = 0

    def take(self, request: studio_pb2.UploadPhotosRequest) -> None:
        self.messages += 1
        if self.messages > MAX_STREAM_MESSAGES:
            raise _invalid(f"one upload stream carries at most {MAX_STREAM_MESSAGES} messages; send larger chunks")
        part = request.WhichOneof("part")
        if part == "header":
            self._start_photo(request.header)
        elif part == "chunk":
            self._add_chunk(request.chunk)
        else:
            raise _invalid(f"message {self.messages} of the stream is empty: it needs a header or a chunk")

    def _start_photo(self, header: studio_pb2.PhotoHeader) -> None:
        _validate_header(header)
        client_id = header.client_photo_id
        if client_id and client_id in self.client_ids:
            raise _invalid(f"client_photo_id {client_id!r} repeats")
        self.client_ids.add(client_id)
        if len(self.photos) >= MAX_PHOTOS_PER_STREAM:
            raise _invalid(f"at most {MAX_PHOTOS_PER_STREAM} photos")
        self.photos.append(IncomingPhoto(header))

    def _add_chunk(self, chunk: bytes) -> None:
        if not self.photos:
            raise _invalid("stream must start with a photo header")
        self.photos[-1].add(chunk)
        self.stream_bytes += len(chunk)
        if self.stream_bytes > MAX_STREAM_BYTES:
            raise _invalid(f"one upload stream carries at most {MAX_STREAM_BYTES // (1024 * 1024)} MiB; split the set")


async def _collect(requests: AsyncIterator[studio_pb2.UploadPhotosRequest]) -> list[IncomingPhoto]:
    """Read the whole stream first, so a malformed stream stores nothing at all."""
    reader = StreamReader()
    async for request in requests:
        reader.take(request)
    if not reader.photos:
        raise _invalid("empty upload: no photo header received")
    for photo in reader.photos:
        _validate_content(photo)
    return reader.photos


def _validate_header(header: studio_pb2.PhotoHeader) -> None:
    if not header.subject_id:
        raise _invalid("photo header needs subject_id")
    if header.role not in ROLES:
        raise _invalid("photo header needs role HEADSHOT or REFERENCE")
    if not header.filename:
        raise _invalid("photo header needs a filename")
    problem = fields.filename_problem(header.filename) or fields.too_long(
        "client_photo_id", header.client_photo_id, fields.MAX_CLIENT_PHOTO_ID_CHARS
    )
    if problem:
        raise _invalid(problem)


def _validate_content(photo: IncomingPhoto) -> None:
    name = photo.header.filename
    if photo.size == 0:
        raise _invalid(f"photo '{name}' has no bytes")
    if not is_image_signature(bytes(photo.data[:SIGNATURE_BYTES])):
        raise _invalid(f"'{name}' is not a JPEG, PNG, WebP or HEIC image")


@dataclass
class Held:
    """What a stream holds before its photos are committed: given back if they never are."""

    tenant: state_pb2.TenantRecord
    subject_id: str
    upload_bytes: int = 0
    digest_entries: list[str] = field(default_factory=list)

    async def give_back(self, ctx: IngestContext) -> None:
        """Best effort: a failure here must not hide the error that made the stream fail."""
        if self.upload_bytes:
            with contextlib.suppress(Exception):
                await quotas.release_daily(ctx.bus, self.tenant, UPLOAD_BYTES_QUOTA, self.upload_bytes)
            self.upload_bytes = 0
        await photo_digests.release(ctx.bus, self.digest_entries)
        self.digest_entries = []


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
    repeats = [(p.fingerprint, earlier[p.header.client_photo_id]) for p in photos if p not in fresh]
    held = Held(tenant, record.subject.subject_id)
    set_verdict, checked = record.subject.set_verdict, {}
    try:
        await _hold(ctx, held, len(record.subject.photos), repeats, fresh)
        if fresh:
            set_verdict, checked = await _store_check_and_commit(ctx, held, record, fresh)
    except photo_digests.DifferentPhoto as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except quotas.QuotaExceeded as error:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    return studio_pb2.UploadPhotosResponse(photos=_in_stream_order(photos, checked, earlier), set_verdict=set_verdict)


async def _hold(
    ctx: IngestContext, held: Held, stored_photos: int,
    repeats: list[tuple[photo_digests.Fingerprint, studio_pb2.PhotoSummary]], fresh: list[IncomingPhoto],
) -> None:
    """Check the stream against the subject and take what its fresh photos need; raises holding nothing."""
    tenant_id, subject_id = held.tenant.tenant_id, held.subject_id
    await photo_digests.verify_repeats(ctx.bus, tenant_id, subject_id, repeats)
    quotas.check_photos_per_subject(held.tenant, stored_photos, len(fresh))
    if not fresh:
        return
    named = [p.fingerprint for p in fresh if p.header.client_photo_id]
    # Listed on the subject before they exist, as orders are: its deletion finds every digest, even one that a
    # crash between claim and commit left behind.
    entries = [photo_digests.entry_name(tenant_id, subject_id, sent.client_photo_id) for sent in named]
    if entries:
        await ctx.update_subject(subject_id, lambda record: _list_entries(record, entries))
    try:
        held.digest_entries = await photo_digests.claim(ctx.bus, tenant_id, subject_id, named)
        fresh_bytes = sum(photo.size for photo in fresh)
        await quotas.reserve_daily(ctx.bus, held.tenant, UPLOAD_BYTES_QUOTA, fresh_bytes, "byte(s)")
        held.upload_bytes = fresh_bytes
    except BaseException:
        await held.give_back(ctx)
        raise


async def _store_check_and_commit(
    ctx: IngestContext, held: Held, record: state_pb2.SubjectRecord, fresh: list[IncomingPhoto]
) -> tuple[common_pb2.SetVerdict, dict[int, studio_pb2.PhotoSummary]]:
    try:
        stored = await _store_and_check(ctx, held.tenant, record, fresh)
    except BaseException:
        await held.give_back(ctx)
        raise
    # Once checked, the photos are kept even if the caller hangs up now: its retry finds them.
    set_verdict = await asyncio.shield(_commit(ctx, held, stored))
    return set_verdict, {id(photo): item.summary for photo, item in zip(fresh, stored.items, strict=True)}


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


@dataclass(eq=False)
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
                tenant_id, subject_id, sent.object_key, bytes(photo.data), privacy_pb2.KEY_PURPOSE_ENCRYPT_UPLOAD
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


async def _commit(ctx: IngestContext, held: Held, checked: CheckedSet) -> common_pb2.SetVerdict:
    """Add the checked photos to the subject within its photo quota (re-checked against the record
    written, so concurrent streams cannot pass it together). A photo a concurrent twin stream committed
    first (same client_photo_id) and every refused photo are not kept (data minimisation: the verdict
    is). A commit that fails gives back what the stream stored and held."""
    dropped: list[CheckedPhoto] = []

    def merge(record: state_pb2.SubjectRecord) -> None:
        known = {p.client_photo_id for p in record.subject.photos if p.client_photo_id}
        dropped[:] = [item for item in checked.items if item.summary.client_photo_id in known]
        kept = [item for item in checked.items if item not in dropped]
        if kept:
            quotas.check_photos_per_subject(held.tenant, len(record.subject.photos), len(kept))
        for item in kept:
            _add_photo(record, item)
        record.subject.set_verdict.CopyFrom(checked.set_verdict)

    try:
        record = await ctx.update_subject(held.subject_id, merge)
    except BaseException:
        if not await _may_have_landed(ctx, held.subject_id, checked):
            await _delete_blobs(ctx, checked.items)
            await held.give_back(ctx)
        raise
    if record is None:  # deleted meanwhile: keep nothing (its purge may have run already), hold nothing
        dropped = list(checked.items)
        await held.give_back(ctx)
    await _delete_blobs(ctx, dropped)
    for item in checked.items:
        if item not in dropped and not item.crop_key:
            await ctx.sealed.blobs.delete(item.object_key)
    return checked.set_verdict


def _add_photo(record: state_pb2.SubjectRecord, item: CheckedPhoto) -> None:
    record.subject.photos.append(item.summary)
    if item.crop_key:
        record.crop_keys[item.summary.photo_id] = item.crop_key


def _list_entries(record: state_pb2.SubjectRecord, entries: list[str]) -> None:
    record.idempotency_entries.extend(entry for entry in entries if entry not in record.idempotency_entries)


async def _may_have_landed(ctx: IngestContext, subject_id: str, checked: CheckedSet) -> bool:
    """Whether a commit that raised was written after all (its reply lost); True when that is unknown:
    blobs then stay (a deletion of the subject purges them) rather than vanish under a kept photo."""
    try:
        record = await ctx.bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    except Exception:
        return True
    ours = {item.summary.photo_id for item in checked.items}
    return record is not None and any(photo.photo_id in ours for photo in record.subject.photos)


async def _delete_blobs(ctx: IngestContext, items: list[CheckedPhoto]) -> None:
    """Best effort: the photos and crops of photos not kept."""
    for item in items:
        for key in (item.object_key, item.crop_key):
            if key:
                with contextlib.suppress(Exception):
                    await ctx.sealed.blobs.delete(key)


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
