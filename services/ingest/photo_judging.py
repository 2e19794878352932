"""faceqa's verdicts on an upload's photos, and the subject they were judged against.

A subject's first accepted headshot anchors its identity: faceqa judges every other photo against it, and the upload
that brings it has the subject's earlier accepted photos judged again with it. Verdicts hold only for the subject
they were judged against (its Basis). Uploads of one subject, on any ingest replica, are judged at the same time;
the one that commits second may find that the first set the anchor, or added photos: ones its own headshot must
judge, ones its photos may duplicate, ones the set's verdict (count, diversity) must count. Its commit (a
compare-and-set of the subject record) checks the Basis against the record it writes, so verdicts judged against
another subject are never written: they are judged again (upload_photos._commit_judged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from studio.v1 import common_pb2, faceqa_pb2, state_pb2, studio_pb2

from services.common.objects import crop_key, new_id, photo_key
from services.ingest.context import IngestContext
from services.ingest.upload_stream import IncomingPhoto


class SubjectMoved(Exception):
    """The subject record no longer shows what the verdicts were judged against; nothing was written."""


@dataclass(frozen=True)
class Basis:
    """What faceqa was told of the subject: its accepted photos, its anchor (the photo id of its first accepted
    headshot, '' when none) and, when the upload brings a headshot to a subject without one, the earlier accepted
    photos judged again."""

    headshot_sent: bool
    accepted: frozenset[str]
    anchor: str
    judged_again: frozenset[str]

    def holds_for(self, record: state_pb2.SubjectRecord) -> bool:
        return basis_of(record, self.headshot_sent) == self


def basis_of(record: state_pb2.SubjectRecord, headshot_sent: bool) -> Basis:
    accepted = [p for p in record.subject.photos if p.verdict.accepted]
    anchor = next((p.photo_id for p in accepted if p.role == common_pb2.PHOTO_ROLE_HEADSHOT), "")
    accepted_ids = frozenset(p.photo_id for p in accepted)
    return Basis(headshot_sent, accepted_ids, anchor, accepted_ids if headshot_sent and not anchor else frozenset())


@dataclass(eq=False)
class CheckedPhoto:
    summary: studio_pb2.PhotoSummary
    object_key: str
    crop_key: str  # '' when refused


@dataclass
class CheckedSet:
    items: list[CheckedPhoto]
    set_verdict: common_pb2.SetVerdict
    basis: Basis
    # Earlier photos judged again (with the subject's first headshot): their new verdicts.
    revised: list[CheckedPhoto] = field(default_factory=list)


def stored_photo(tenant_id: str, subject_id: str, role: int) -> faceqa_pb2.StoredPhoto:
    photo_id = new_id("photo")
    return faceqa_pb2.StoredPhoto(
        photo_id=photo_id, object_key=photo_key(tenant_id, subject_id, photo_id), role=role,
        crop_key=crop_key(tenant_id, subject_id, photo_id),
    )


async def judge(
    ctx: IngestContext, tenant: state_pb2.TenantRecord, record: state_pb2.SubjectRecord,
    photos: Sequence[IncomingPhoto], stored: Sequence[faceqa_pb2.StoredPhoto],
) -> CheckedSet:
    """faceqa's verdicts on the sealed `stored` photos (sent as `photos`) against `record`'s accepted photos; faceqa
    writes the crops of those it accepts."""
    headshot_sent = any(p.header.role == common_pb2.PHOTO_ROLE_HEADSHOT for p in photos)
    again = _judged_again(record, headshot_sent)
    checked = await ctx.faceqa.CheckPhotoSet(
        faceqa_pb2.CheckPhotoSetRequest(
            tenant_id=tenant.tenant_id, subject_id=record.subject.subject_id, photos=[*again, *stored],
            accepted_photos=[] if again else _accepted(record), crop_size=ctx.base_resolution,
            min_accepted_photos=ctx.min_accepted_for(tenant), max_photo_age_days=tenant.max_photo_age_days,
        ),
        timeout=60 + 5 * (len(again) + len(photos)),
    )
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
    return CheckedSet(items, checked.set_verdict, basis_of(record, headshot_sent), revised)


def _judged_again(record: state_pb2.SubjectRecord, headshot_sent: bool) -> list[faceqa_pb2.StoredPhoto]:
    """The subject's accepted photos when this upload brings its first headshot: judged with no headshot
    to match, they are judged again with it, so a photo of someone else never reaches training."""
    basis = basis_of(record, headshot_sent)
    tenant_id, subject_id = record.tenant_id, record.subject.subject_id
    return [
        faceqa_pb2.StoredPhoto(
            photo_id=p.photo_id, object_key=photo_key(tenant_id, subject_id, p.photo_id), role=p.role,
            crop_key=record.crop_keys.get(p.photo_id) or crop_key(tenant_id, subject_id, p.photo_id),
        )
        for p in record.subject.photos if p.photo_id in basis.judged_again
    ]


def _accepted(record: state_pb2.SubjectRecord) -> list[faceqa_pb2.StoredPhoto]:
    tenant_id, subject_id = record.tenant_id, record.subject.subject_id
    return [
        faceqa_pb2.StoredPhoto(
            photo_id=p.photo_id, object_key=photo_key(tenant_id, subject_id, p.photo_id), role=p.role
        )
        for p in record.subject.photos if p.verdict.accepted
    ]
