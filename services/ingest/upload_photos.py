"""UploadPhotos: client-streamed photos, sealed under the subject's key before they touch storage,
checked by faceqa, a verdict per photo. Bad input stores nothing; a stream is all or nothing.

Resumable: a photo sent with a client_photo_id that the subject already has (an earlier stream got
through, its reply did not) is not stored or checked again; it comes back with already_uploaded. A
client_photo_id sent with another photo (other bytes or role) is refused (photo_digests.py).

The stream is read and checked as it arrives by upload_stream.py; one process handles at most
STUDIO_MAX_UPLOAD_STREAMS streams at once: one more waits for a slot (upload_stream.StreamSlots)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from studio.v1 import common_pb2, faceqa_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.objects import crop_key, new_id, photo_key
from services.ingest import fields, photo_digests, quotas
from services.ingest.context import IngestContext
from services.ingest.upload_stream import (
    UPLOAD_BYTES_QUOTA,
    IncomingPhoto,
    StreamSlots,
    UploadError,
    UploadGate,
    collect,
)

# Per process: every stream may hold up to upload_stream.MAX_STREAM_BYTES.
STREAM_SLOTS = StreamSlots.from_env()


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
        async with STREAM_SLOTS.slot():
            return await _upload(ctx, tenant, requests, context)
    except UploadError as error:
        await context.abort(error.code, error.reason)
    except photo_digests.DifferentPhoto as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    except quotas.QuotaExceeded as error:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))


async def _upload(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, requests: AsyncIterator[studio_pb2.UploadPhotosRequest],
    context: grpc.aio.ServicerContext,
) -> studio_pb2.UploadPhotosResponse:
    gate = UploadGate(ctx, tenant, context)
    photos = await collect(requests, gate)
    # Read again: other streams may have committed while this one was read.
    record = await ctx.owned_subject(tenant, photos[0].header.subject_id, context)
    earlier = {p.client_photo_id: p for p in record.subject.photos if p.client_photo_id}
    fresh = [photo for photo in photos if photo.header.client_photo_id not in earlier]
    repeats = [(p.fingerprint, earlier[p.header.client_photo_id]) for p in photos if p not in fresh]
    held = Held(tenant, record.subject.subject_id)
    set_verdict, checked = record.subject.set_verdict, {}
    await _hold(ctx, held, len(record.subject.photos), repeats, fresh)
    if fresh:
        set_verdict, checked = await _store_check_and_commit(ctx, held, record, fresh)
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
    twins = await asyncio.shield(_commit(ctx, held, stored))
    summaries = {}
    for photo, item in zip(fresh, stored.items, strict=True):
        twin = twins.get(item.summary.client_photo_id)
        summaries[id(photo)] = item.summary if twin is None else _as_repeat(twin)
    return stored.set_verdict, summaries


def _in_stream_order(
    photos: list[IncomingPhoto], checked: dict, earlier: dict[str, studio_pb2.PhotoSummary]
) -> list[studio_pb2.PhotoSummary]:
    return [checked[id(photo)] if id(photo) in checked else _as_repeat(earlier[photo.header.client_photo_id])
            for photo in photos]


def _as_repeat(stored: studio_pb2.PhotoSummary) -> studio_pb2.PhotoSummary:
    repeat = studio_pb2.PhotoSummary()
    repeat.CopyFrom(stored)
    repeat.already_uploaded = True
    return repeat


@dataclass(eq=False)
class CheckedPhoto:
    summary: studio_pb2.PhotoSummary
    object_key: str
    crop_key: str  # '' when refused


@dataclass
class CheckedSet:
    items: list[CheckedPhoto]
    set_verdict: common_pb2.SetVerdict
    # Earlier photos judged again (with the subject's first headshot): their new verdicts.
    revised: list[CheckedPhoto] = field(default_factory=list)


async def _store_and_check(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, record: state_pb2.SubjectRecord, photos: list[IncomingPhoto]
) -> CheckedSet:
    """Seal every photo and let faceqa judge them with the subject's accepted photos."""
    tenant_id, subject_id = tenant.tenant_id, record.subject.subject_id
    stored = [_stored_photo(tenant_id, subject_id, photo.header.role) for photo in photos]
    again = _judged_again(record, photos)
    written: list[str] = []
    try:
        for photo, sent in zip(photos, stored, strict=True):
            await ctx.sealed.put(
                tenant_id, subject_id, sent.object_key, bytes(photo.data), privacy_pb2.KEY_PURPOSE_ENCRYPT_UPLOAD
            )
            written += [sent.object_key, sent.crop_key]  # faceqa writes the crop
        checked = await ctx.faceqa.CheckPhotoSet(
            faceqa_pb2.CheckPhotoSetRequest(
                tenant_id=tenant_id, subject_id=subject_id, photos=[*again, *stored],
                accepted_photos=[] if again else _accepted(record), crop_size=ctx.base_resolution,
                min_accepted_photos=ctx.min_accepted_for(tenant), max_photo_age_days=tenant.max_photo_age_days,
            ),
            timeout=60 + 5 * (len(again) + len(photos)),
        )
    except BaseException:
        for key in written:  # all or nothing: a failed upload keeps none of its photos
            await ctx.sealed.blobs.delete(key)
        raise
    revised = [
        CheckedPhoto(studio_pb2.PhotoSummary(photo_id=sent.photo_id, verdict=result.verdict), sent.object_key,
                     sent.crop_key)
        for sent, result in zip(again, checked.photos[: len(again)], strict=True)
    ]
    items = []
    for photo, sent, result in zip(photos, stored, checked.photos[len(again):], strict=True):
        summary = studio_pb2.PhotoSummary(
            photo_id=sent.photo_id, filename=photo.header.filename, role=photo.header.role,
            verdict=result.verdict, size_bytes=photo.size, client_photo_id=photo.header.client_photo_id,
        )
        items.append(CheckedPhoto(summary, sent.object_key, result.crop_key if result.verdict.accepted else ""))
    return CheckedSet(items, checked.set_verdict, revised)


def _judged_again(record: state_pb2.SubjectRecord, photos: list[IncomingPhoto]) -> list[faceqa_pb2.StoredPhoto]:
    """The subject's accepted photos when this upload brings its first headshot: judged with no headshot
    to match, they are judged again with it, so a photo of someone else never reaches training."""
    accepted = [p for p in record.subject.photos if p.verdict.accepted]
    if any(p.role == common_pb2.PHOTO_ROLE_HEADSHOT for p in accepted):
        return []
    if not any(p.header.role == common_pb2.PHOTO_ROLE_HEADSHOT for p in photos):
        return []
    tenant_id, subject_id = record.tenant_id, record.subject.subject_id
    return [
        faceqa_pb2.StoredPhoto(
            photo_id=p.photo_id, object_key=photo_key(tenant_id, subject_id, p.photo_id), role=p.role,
            crop_key=record.crop_keys.get(p.photo_id) or crop_key(tenant_id, subject_id, p.photo_id),
        )
        for p in accepted
    ]


async def _commit(ctx: IngestContext, held: Held, checked: CheckedSet) -> dict[str, studio_pb2.PhotoSummary]:
    """Add the checked photos to the subject within its photo quota (re-checked against the record
    written, so concurrent streams cannot pass it together). A photo a concurrent twin stream committed
    first (same client_photo_id) and every refused photo are not kept (data minimisation: the verdict
    is); the twins' photos as stored, by client_photo_id, are returned. A commit that fails gives back
    what the stream stored and held; so does a subject deleted meanwhile, with NOT_FOUND."""
    twins: dict[str, studio_pb2.PhotoSummary] = {}

    def merge(record: state_pb2.SubjectRecord) -> None:
        known = {p.client_photo_id: p for p in record.subject.photos if p.client_photo_id}
        twins.clear()
        twins.update((item.summary.client_photo_id, known[item.summary.client_photo_id])
                     for item in checked.items if item.summary.client_photo_id in known)
        kept = [item for item in checked.items if item.summary.client_photo_id not in twins]
        if kept:
            quotas.check_photos_per_subject(held.tenant, len(record.subject.photos), len(kept))
        for item in kept:
            _add_photo(record, item)
        _revise(record, checked.revised)
        record.subject.set_verdict.CopyFrom(checked.set_verdict)

    try:
        record = await ctx.update_subject(held.subject_id, merge)
    except BaseException:
        if not await _may_have_landed(ctx, held.subject_id, checked):
            await _delete_blobs(ctx, checked.items)
            await held.give_back(ctx)
        raise
    if record is None:  # deleted meanwhile: keep nothing (its purge may have run already), hold nothing
        await _delete_blobs(ctx, checked.items)
        await held.give_back(ctx)
        raise UploadError(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(held.subject_id))
    dropped = [item for item in checked.items if item.summary.client_photo_id in twins]
    await _delete_blobs(ctx, dropped + [item for item in checked.revised if not item.summary.verdict.accepted])
    for item in checked.items:
        if item not in dropped and not item.crop_key:
            await ctx.sealed.blobs.delete(item.object_key)
    return twins


def _add_photo(record: state_pb2.SubjectRecord, item: CheckedPhoto) -> None:
    record.subject.photos.append(item.summary)
    if item.crop_key:
        record.crop_keys[item.summary.photo_id] = item.crop_key


def _revise(record: state_pb2.SubjectRecord, revised: list[CheckedPhoto]) -> None:
    verdicts = {item.summary.photo_id: item.summary.verdict for item in revised}
    for photo in record.subject.photos:
        verdict = verdicts.get(photo.photo_id)
        if verdict is not None:
            photo.verdict.CopyFrom(verdict)
            if not verdict.accepted and photo.photo_id in record.crop_keys:
                del record.crop_keys[photo.photo_id]


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
