"""ExportSubject: everything held about one subject, for the data subject's right of access, as a tar
archive streamed in chunks. Built one member at a time in memory (nothing is written to disk, so an
export leaves no temporary data behind); manifest.json, last, lists every file with its SHA-256.

  subject.json                     the subject as the tenant registered it
  consent.json                     the consent record held by the vault
  photos/verdicts.json             every photo's verdict (refused photos are not kept, their verdicts are)
  photos/<photo id>-<filename>     each kept photo, decrypted (the file name's base name only)
  orders/<order id>/order.json     each order and its history
  orders/<order id>/<portrait>.png each portrait, decrypted
  audit.jsonl                      the vault's audit entries about the subject
  manifest.json                    files, sizes, digests, and derived data held but not exported
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.json_format import MessageToDict
from studio.v1 import privacy_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.blobstore import BlobNotFound
from services.common.objects import photo_key, portrait_key
from services.ingest import fields
from services.ingest.context import IngestContext

CHUNK_BYTES = 64 * 1024
EXPORT = privacy_pb2.KEY_PURPOSE_EXPORT_SUBJECT


class TarChunks:
    """A tar stream whose bytes are taken out after each member."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.files: list[dict] = []

    def add(self, name: str, data: bytes) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self._tar.addfile(info, io.BytesIO(data))
        self.files.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        return self._drain()

    def close(self) -> bytes:
        self._tar.close()
        return self._drain()

    def _drain(self) -> bytes:
        data = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data


def _json(value) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


def _as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def _chunks(data: bytes) -> list[studio_pb2.ExportSubjectResponse]:
    return [studio_pb2.ExportSubjectResponse(chunk=data[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES)]


async def export_subject(
    ctx: IngestContext, request: studio_pb2.ExportSubjectRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[studio_pb2.ExportSubjectResponse]:
    tenant = await ctx.authenticate(context)
    record = await ctx.owned_subject(tenant, request.subject_id, context)
    consent = await _consent(ctx, record, context)
    yield studio_pb2.ExportSubjectResponse(info=studio_pb2.ExportInfo(
        subject_id=request.subject_id, content_type="application/x-tar", filename=f"{request.subject_id}.tar",
    ))
    archive = TarChunks()
    missing: list[str] = []
    async for name, data in _members(ctx, record, consent, missing):
        for response in _chunks(archive.add(name, data)):
            yield response
    manifest = _manifest(record, archive.files, missing)
    for response in _chunks(archive.add("manifest.json", _json(manifest)) + archive.close()):
        yield response


async def _consent(ctx: IngestContext, record: state_pb2.SubjectRecord, context) -> dict:
    try:
        response = await ctx.vault.stub.GetConsent(
            privacy_pb2.GetConsentRequest(tenant_id=record.tenant_id, subject_id=record.subject.subject_id),
            metadata=ctx.vault.metadata, timeout=10,
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:  # shredded: being deleted
            await context.abort(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(record.subject.subject_id))
        raise
    return _as_dict(response.consent)


async def _members(ctx: IngestContext, record: state_pb2.SubjectRecord, consent: dict, missing: list[str]):
    tenant_id, subject = record.tenant_id, record.subject
    summary = studio_pb2.Subject()
    summary.CopyFrom(subject)
    del summary.photos[:]
    summary.ClearField("set_verdict")
    yield "subject.json", _json(_as_dict(summary))
    yield "consent.json", _json(consent)
    yield "photos/verdicts.json", _json({
        "photos": [_as_dict(photo) for photo in subject.photos], "set_verdict": _as_dict(subject.set_verdict),
    })
    for photo in subject.photos:
        if photo.verdict.accepted:
            data = await _open(ctx, tenant_id, subject.subject_id, photo_key(tenant_id, subject.subject_id,
                                                                             photo.photo_id), missing)
            if data is not None:
                yield f"photos/{photo.photo_id}-{fields.archive_name(photo.filename)}", data
    for order_id in record.order_ids:
        async for member in _order_members(ctx, record, order_id, missing):
            yield member
    yield "audit.jsonl", await _audit(ctx, tenant_id, subject.subject_id)


async def _order_members(ctx: IngestContext, record: state_pb2.SubjectRecord, order_id: str, missing: list[str]):
    order_record = await ctx.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
    if order_record is None or order_record.tenant_id != record.tenant_id:
        return
    yield f"orders/{order_id}/order.json", _json({
        "order": _as_dict(order_record.order), "history": [_as_dict(event) for event in order_record.history],
    })
    subject_id = record.subject.subject_id
    for portrait in order_record.order.portraits:
        key = portrait_key(record.tenant_id, subject_id, order_id, portrait.portrait_id)
        data = await _open(ctx, record.tenant_id, subject_id, key, missing)
        if data is not None:
            yield f"orders/{order_id}/{portrait.portrait_id}.png", data


async def _open(ctx: IngestContext, tenant_id: str, subject_id: str, key: str, missing: list[str]) -> bytes | None:
    try:
        return await ctx.sealed.get(tenant_id, subject_id, key, EXPORT)
    except BlobNotFound:
        missing.append(key.rsplit("/", 1)[-1])
        return None


async def _audit(ctx: IngestContext, tenant_id: str, subject_id: str) -> bytes:
    stream = ctx.vault.stub.ExportSubjectAudit(
        privacy_pb2.ExportSubjectAuditRequest(tenant_id=tenant_id, subject_id=subject_id),
        metadata=ctx.vault.metadata, timeout=60,
    )
    return "".join([f"{item.json}\n" async for item in stream]).encode()


def _manifest(record: state_pb2.SubjectRecord, files: list[dict], missing: list[str]) -> dict:
    return {
        "format": "portrait-studio-subject-export/1",
        "subject_id": record.subject.subject_id,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        "counts": {
            "photos_checked": len(record.subject.photos), "orders": len(record.order_ids),
        },
        # Held, encrypted under the subject's key, but only meaningful to the studio's models.
        "derived_data_not_exported": {
            "aligned_face_crops": len(record.crop_keys), "personal_lora_models": sorted(record.lora_keys),
        },
        "listed_but_no_longer_stored": missing,
    }
