"""The FaceQA internal API: check one sealed photo, write its sealed training crop."""

from __future__ import annotations

import asyncio

import grpc
from studio.v1 import common_pb2, faceqa_pb2, faceqa_pb2_grpc, privacy_pb2

from services.common.blobstore import BlobNotFound
from services.common.vault_client import SealedStore
from services.faceqa.checks import PhotoCheck, check_photo

MAX_CROP_SIZE = 2048


def verdict_of(result: PhotoCheck) -> common_pb2.PhotoVerdict:
    verdict = common_pb2.PhotoVerdict(
        accepted=result.accepted, reasons=result.reasons, messages=result.messages
    )
    if result.face_box:
        left, top, right, bottom = result.face_box
        verdict.face_box.CopyFrom(common_pb2.FaceBox(left=left, top=top, right=right, bottom=bottom))
    return verdict


class FaceQAServicer(faceqa_pb2_grpc.FaceQAServicer):
    def __init__(self, sealed: SealedStore) -> None:
        self.sealed = sealed

    async def CheckPhoto(self, request: faceqa_pb2.CheckPhotoRequest, context: grpc.aio.ServicerContext):
        missing = [name for name in ("tenant_id", "subject_id", "photo_id", "object_key", "crop_key")
                   if not getattr(request, name)]
        if missing:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"missing field(s): {', '.join(missing)}")
        if not 8 <= request.crop_size <= MAX_CROP_SIZE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"crop_size must be 8..{MAX_CROP_SIZE}")
        try:
            photo = await self.sealed.get(
                request.tenant_id, request.subject_id, request.object_key, privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO
            )
        except BlobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"photo '{request.photo_id}' is not stored")
        # dlib work is CPU-bound: keep it off the event loop.
        result = await asyncio.to_thread(check_photo, photo, crop_size=request.crop_size)
        crop_key = ""
        if result.accepted and result.crop_png:
            await self.sealed.put(
                request.tenant_id, request.subject_id, request.crop_key, result.crop_png,
                privacy_pb2.KEY_PURPOSE_ENCRYPT_CROP,
            )
            crop_key = request.crop_key
        return faceqa_pb2.CheckPhotoResponse(verdict=verdict_of(result), crop_key=crop_key)
