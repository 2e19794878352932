"""The FaceQA internal API: check sealed photos (one, or a set with identity and duplicate checks),
write their sealed training crops, and score identity for the trainer and renderer."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import OrderedDict

import grpc
import numpy as np
from studio.v1 import common_pb2, faceqa_pb2, faceqa_pb2_grpc, privacy_pb2

from services.common.blobstore import BlobNotFound
from services.common.identity_scoring import MAX_IMAGES_PER_CALL
from services.common.vault_client import SealedStore
from services.faceqa.checks import PhotoCheck
from services.faceqa.photoset import SetPhoto, consensus, judge_set
from services.faceqa.pool import CheckPool, PoolUnavailable
from services.faceqa.recency import with_recency_note
from services.faceqa.thresholds import DEFAULTS, Thresholds
from services.faceqa.verdicts import set_verdict_of, verdict_of

log = logging.getLogger(__name__)

MAX_CROP_SIZE = 2048
MAX_NEW_PHOTOS = 100
MAX_ACCEPTED_PHOTOS = 500
# Photos judged in one call: new ones, plus the earlier ones ingest sends again with the first headshot.
MAX_JUDGED_PHOTOS = MAX_NEW_PHOTOS + MAX_ACCEPTED_PHOTOS
MAX_SCORED_IMAGES = MAX_IMAGES_PER_CALL
EMBEDDING_SIZE = 128
ROLES = (common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE)


class CheckCache:
    """Checks of accepted photos by object key, so a later upload does not re-analyse earlier ones.

    Memory only (embeddings are biometric data: never written anywhere unencrypted) and bounded;
    a miss costs one re-analysis of the sealed photo, never a wrong answer.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, PhotoCheck] = OrderedDict()

    def get(self, object_key: str) -> PhotoCheck | None:
        found = self._entries.get(object_key)
        if found is not None:
            self._entries.move_to_end(object_key)
        return found

    def put(self, object_key: str, check: PhotoCheck) -> None:
        self._entries[object_key] = dataclasses.replace(check, crop_png=None)
        self._entries.move_to_end(object_key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget_subject(self, subject_id: str) -> int:
        doomed = [k for k in self._entries if f"/subjects/{subject_id}/" in k]
        for key in doomed:
            del self._entries[key]
        return len(doomed)


def _missing(message, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not getattr(message, name)]


def _set_request_problem(request: faceqa_pb2.CheckPhotoSetRequest) -> str | None:
    missing = _missing(request, ("tenant_id", "subject_id"))
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    if not request.photos or len(request.photos) > MAX_JUDGED_PHOTOS:
        return f"photos: 1..{MAX_JUDGED_PHOTOS} per call"
    if len(request.accepted_photos) > MAX_ACCEPTED_PHOTOS:
        return f"accepted_photos: at most {MAX_ACCEPTED_PHOTOS}"
    if not 8 <= request.crop_size <= MAX_CROP_SIZE:
        return f"crop_size must be 8..{MAX_CROP_SIZE}"
    for index, photo in enumerate(request.photos):
        missing = _missing(photo, ("photo_id", "object_key", "crop_key"))
        if missing or photo.role not in ROLES:
            return f"photos[{index}]: needs photo_id, object_key, crop_key and role HEADSHOT or REFERENCE"
    for index, photo in enumerate(request.accepted_photos):
        if _missing(photo, ("photo_id", "object_key")) or photo.role not in ROLES:
            return f"accepted_photos[{index}]: needs photo_id, object_key and role"
    return None


def _unavailable_when_the_pool_fails(method):
    """PoolUnavailable (its workers died under the request) as UNAVAILABLE: a retry later may pass."""

    @functools.wraps(method)
    async def answer(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except PoolUnavailable as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))

    return answer


class FaceQAServicer(faceqa_pb2_grpc.FaceQAServicer):
    def __init__(self, sealed: SealedStore, pool: CheckPool, thresholds: Thresholds = DEFAULTS) -> None:
        self.sealed = sealed
        self.pool = pool
        self.thresholds = thresholds
        self.cache = CheckCache()

    @_unavailable_when_the_pool_fails
    async def CheckPhoto(self, request: faceqa_pb2.CheckPhotoRequest, context: grpc.aio.ServicerContext):
        missing = _missing(request, ("tenant_id", "subject_id", "photo_id", "object_key", "crop_key"))
        if missing:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"missing field(s): {', '.join(missing)}")
        if not 8 <= request.crop_size <= MAX_CROP_SIZE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"crop_size must be 8..{MAX_CROP_SIZE}")
        stored = faceqa_pb2.StoredPhoto(
            photo_id=request.photo_id, object_key=request.object_key, role=request.role, crop_key=request.crop_key
        )
        [photo] = await self._read(request.tenant_id, request.subject_id, [stored], context)
        headshot = request.role == common_pb2.PHOTO_ROLE_HEADSHOT
        [result] = await self.pool.check_all_async([(photo, headshot)], request.crop_size)
        result = with_recency_note(result, request.max_photo_age_days)
        crop_key = await self._store_crop(request.tenant_id, request.subject_id, stored, result)
        return faceqa_pb2.CheckPhotoResponse(verdict=verdict_of(result), crop_key=crop_key)

    @_unavailable_when_the_pool_fails
    async def CheckPhotoSet(self, request: faceqa_pb2.CheckPhotoSetRequest, context: grpc.aio.ServicerContext):
        problem = _set_request_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        tenant_id, subject_id = request.tenant_id, request.subject_id
        earlier = await self._earlier_checks(tenant_id, subject_id, list(request.accepted_photos))
        photos = await self._read(tenant_id, subject_id, list(request.photos), context)
        checks = await self.pool.check_all_async(
            [(data, p.role == common_pb2.PHOTO_ROLE_HEADSHOT) for data, p in zip(photos, request.photos, strict=True)],
            request.crop_size,
        )
        new = [
            SetPhoto(p.photo_id, p.role == common_pb2.PHOTO_ROLE_HEADSHOT, check)
            for p, check in zip(request.photos, checks, strict=True)
        ]
        for photo in [*earlier, *new]:  # the tenant's current limit decides, for earlier photos too
            photo.check = with_recency_note(photo.check, request.max_photo_age_days)
        summary = judge_set(earlier, new, self.thresholds, request.min_accepted_photos or None)
        crop_keys = await asyncio.gather(
            *(self._store_crop(tenant_id, subject_id, p, s.check) for p, s in zip(request.photos, new, strict=True))
        )
        for stored, photo in zip(request.photos, new, strict=True):
            if photo.check.accepted:
                self._remember(subject_id, stored.object_key, photo.check)
        return faceqa_pb2.CheckPhotoSetResponse(
            photos=[
                faceqa_pb2.CheckedPhoto(photo_id=p.photo_id, verdict=verdict_of(p.check, p), crop_key=key)
                for p, key in zip(new, crop_keys, strict=True)
            ],
            set_verdict=set_verdict_of(summary),
        )

    @_unavailable_when_the_pool_fails
    async def ScoreIdentity(self, request: faceqa_pb2.ScoreIdentityRequest, context: grpc.aio.ServicerContext):
        if not 1 <= len(request.images) <= MAX_SCORED_IMAGES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"images: 1..{MAX_SCORED_IMAGES} per call")
        if len(request.reference_images) + len(request.reference_embeddings) > MAX_SCORED_IMAGES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_SCORED_IMAGES} references")
        if any(len(e.values) != EMBEDDING_SIZE for e in request.reference_embeddings):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"reference embeddings have {EMBEDDING_SIZE} values")
        faces = await self.pool.embed_all_async([*request.reference_images, *request.images])
        references = [np.asarray(e.values) for e in request.reference_embeddings]
        references += [np.asarray(f.embedding) for f in faces[: len(request.reference_images)] if f is not None]
        if not references:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no face found in any reference")
        centre = consensus(references)
        limit = self.thresholds.identity_max_distance
        scores = []
        for face in faces[len(request.reference_images):]:
            if face is None:
                scores.append(faceqa_pb2.IdentityScore(face_found=False))
                continue
            distance = float(np.linalg.norm(np.asarray(face.embedding) - centre))
            left, top, right, bottom = face.face_box
            scores.append(faceqa_pb2.IdentityScore(
                face_found=True, distance=distance, same_person=distance <= limit,
                face_box=common_pb2.FaceBox(left=left, top=top, right=right, bottom=bottom),
            ))
        return faceqa_pb2.ScoreIdentityResponse(
            scores=scores, reference=faceqa_pb2.FaceEmbedding(values=centre.tolist()), threshold=limit
        )

    async def _read(
        self, tenant_id: str, subject_id: str, photos: list[faceqa_pb2.StoredPhoto], context: grpc.aio.ServicerContext
    ) -> list[bytes]:
        try:
            return list(await asyncio.gather(*(
                self.sealed.get(tenant_id, subject_id, p.object_key, privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO)
                for p in photos
            )))
        except BlobNotFound as missing:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"photo is not stored: {missing}")

    def _remember(self, subject_id: str, object_key: str, check: PhotoCheck) -> None:
        if not self.sealed.guard.is_deleted(subject_id):  # its deletion may have come during the analysis
            self.cache.put(object_key, check)

    async def _earlier_checks(
        self, tenant_id: str, subject_id: str, accepted: list[faceqa_pb2.StoredPhoto]
    ) -> list[SetPhoto]:
        """Photos accepted by earlier uploads, from the cache or analysed again from the store."""
        found = {p.object_key: self.cache.get(p.object_key) for p in accepted}
        misses = [p for p in accepted if found[p.object_key] is None]
        readable, data = [], []
        for photo in misses:
            try:
                data.append(await self.sealed.get(
                    tenant_id, subject_id, photo.object_key, privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO
                ))
                readable.append(photo)
            except BlobNotFound:
                log.warning("an earlier accepted photo is no longer stored; judged without it")
        checks = await self.pool.check_all_async(
            [(d, p.role == common_pb2.PHOTO_ROLE_HEADSHOT) for d, p in zip(data, readable, strict=True)]
        )
        for photo, check in zip(readable, checks, strict=True):
            found[photo.object_key] = check
            if check.accepted:
                self._remember(subject_id, photo.object_key, check)
        return [
            SetPhoto(p.photo_id, p.role == common_pb2.PHOTO_ROLE_HEADSHOT, found[p.object_key])
            for p in accepted if found[p.object_key] is not None and found[p.object_key].accepted
        ]

    async def _store_crop(
        self, tenant_id: str, subject_id: str, photo: faceqa_pb2.StoredPhoto, result: PhotoCheck
    ) -> str:
        if not (result.accepted and result.crop_png):
            return ""
        await self.sealed.put(
            tenant_id, subject_id, photo.crop_key, result.crop_png, privacy_pb2.KEY_PURPOSE_ENCRYPT_CROP
        )
        return photo.crop_key
