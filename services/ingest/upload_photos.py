"""UploadPhotos: client-streamed photos, sealed under the subject's key before they touch storage,
checked by faceqa, a verdict per photo. Bad input stores nothing; a stream is all or nothing.

Resumable: a photo sent with a client_photo_id that the subject already has (an earlier stream got
through, its reply did not) is not stored or checked again; it comes back with already_uploaded. A
client_photo_id sent with another photo (other bytes or role) is refused (photo_digests.py).

One identity per subject: its first accepted headshot anchors it, across concurrent uploads on any replica, as
the commit checks the verdicts against the subject record it writes (photo_judging.py).

The stream is read and checked as it arrives by upload_stream.py; one process handles at most
STUDIO_MAX_UPLOAD_STREAMS streams at once: one more waits for a slot (upload_stream.StreamSlots)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from studio.v1 import common_pb2, faceqa_pb2, privacy_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.shielding import completed_even_if_cancelled
from services.ingest import fields, photo_digests, quotas
from services.ingest.context import IngestContext
from services.ingest.photo_judging import CheckedPhoto, CheckedSet, SubjectMoved, judge, stored_photo
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
# Judgements of one upload's photos before it is refused with ABORTED, each abandoned because another upload added
# photos to the subject meanwhile (its first headshot, photos to compare with, photos its set verdict counts).
MAX_JUDGEMENTS = 3


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
    """Seal every photo and let faceqa judge them with the subject's accepted photos, then commit them."""
    stored = [stored_photo(held.tenant.tenant_id, held.subject_id, photo.header.role) for photo in fresh]
    try:
        await _seal(ctx, held, fresh, stored)
        checked = await judge(ctx, held.tenant, record, fresh, stored)
    except BaseException:
        await _forget(ctx, held, stored)
        raise
    # Once checked, the photos are kept even if the caller hangs up now: its retry finds them.
    checked, twins = await completed_even_if_cancelled(_commit_judged(ctx, held, fresh, stored, checked))
    summaries = {}
    for photo, item in zip(fresh, checked.items, strict=True):
        twin = twins.get(item.summary.client_photo_id)
        summaries[id(photo)] = item.summary if twin is None else _as_repeat(twin)
    return checked.set_verdict, summaries


async def _seal(
    ctx: IngestContext, held: Held, photos: list[IncomingPhoto], stored: list[faceqa_pb2.StoredPhoto]
) -> None:
    for photo, sent in zip(photos, stored, strict=True):
        await ctx.sealed.put(held.tenant.tenant_id, held.subject_id, sent.object_key, bytes(photo.data),
                             privacy_pb2.KEY_PURPOSE_ENCRYPT_UPLOAD)


async def _commit_judged(
    ctx: IngestContext, held: Held, fresh: list[IncomingPhoto], stored: list[faceqa_pb2.StoredPhoto],
    checked: CheckedSet,
) -> tuple[CheckedSet, dict[str, studio_pb2.PhotoSummary]]:
    """Commit the photos with their verdicts. Verdicts judged against a subject another upload (on any replica)
    changed meanwhile are judged again against the subject as it is now (photo_judging.py); after MAX_JUDGEMENTS,
    the upload is refused with ABORTED, keeping and holding nothing, and the client sends it again."""
    judgements = 1
    while True:
        try:
            return checked, await _commit(ctx, held, checked)
        except SubjectMoved:
            if judgements == MAX_JUDGEMENTS:
                await _forget(ctx, held, stored)
                raise UploadError(grpc.StatusCode.ABORTED, _moved(held.subject_id)) from None
        checked = await _judge_again(ctx, held, fresh, stored, checked)
        judgements += 1


async def _judge_again(
    ctx: IngestContext, held: Held, fresh: list[IncomingPhoto], stored: list[faceqa_pb2.StoredPhoto],
    abandoned: CheckedSet,
) -> CheckedSet:
    try:
        # A crop of a photo the new verdict refuses must not stay behind; faceqa writes those it accepts again.
        await _delete_keys(ctx, [item.crop_key for item in abandoned.items])
        record = await ctx.bus.kv_get(topology.SUBJECTS_BUCKET, held.subject_id, state_pb2.SubjectRecord)
        if record is None:
            raise UploadError(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(held.subject_id))
        return await judge(ctx, held.tenant, record, fresh, stored)
    except BaseException:
        await _forget(ctx, held, stored)
        raise


def _moved(subject_id: str) -> str:
    return (f"subject {subject_id} changed {MAX_JUDGEMENTS} times while this upload's photos were checked (other "
            "uploads added photos to it); nothing of this upload was kept: send the photos again to have them judged "
            "against the subject as it is now")


async def _forget(ctx: IngestContext, held: Held, stored: list[faceqa_pb2.StoredPhoto]) -> None:
    """All or nothing: an upload that fails keeps none of its photos and crops, and holds nothing."""
    await _delete_keys(ctx, [key for sent in stored for key in (sent.object_key, sent.crop_key)])
    await held.give_back(ctx)


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


async def _commit(ctx: IngestContext, held: Held, checked: CheckedSet) -> dict[str, studio_pb2.PhotoSummary]:
    """Add the checked photos to the subject within its photo quota (re-checked against the record
    written, so concurrent streams cannot pass it together). A photo a concurrent twin stream committed
    first (same client_photo_id) and every refused photo are not kept (data minimisation: the verdict
    is); the twins' photos as stored, by client_photo_id, are returned. A commit that fails gives back
    what the stream stored and held; so does a subject deleted meanwhile, with NOT_FOUND. SubjectMoved, writing
    nothing, when the record no longer shows the subject the photos were judged against."""
    twins: dict[str, studio_pb2.PhotoSummary] = {}

    def merge(record: state_pb2.SubjectRecord) -> None:
        if not checked.basis.holds_for(record):
            raise SubjectMoved
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
    except SubjectMoved:
        raise
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
    await _delete_keys(ctx, [key for item in items for key in (item.object_key, item.crop_key)])


async def _delete_keys(ctx: IngestContext, keys: list[str]) -> None:
    for key in keys:
        if key:
            with contextlib.suppress(Exception):
                await ctx.sealed.blobs.delete(key)
