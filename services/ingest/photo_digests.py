"""What a client_photo_id stands for: the SHA-256 of the role and bytes of the photo first sent under it.

Kept as an idempotency entry (studio_idempotency, kind 'photo', listed in the subject record's
idempotency_entries before it is claimed, so that a deletion purges it). The first stream that sends a photo under an id
claims the entry (a KV create: one wins, across replicas too); a stream that sends another photo under
the same id is refused, as an idempotency key reused for a different request is. A stream that fails
gives its claims back. Photos stored before digests were kept are compared by role and size."""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

from studio.v1 import state_pb2, studio_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest.idempotency import idempotency_entry

PHOTO_KIND = "photo"
CLAIM_ATTEMPTS = 10


class DifferentPhoto(ValueError):
    def __init__(self, client_photo_id: str) -> None:
        super().__init__(f"client_photo_id {client_photo_id!r} was used for a different photo")


@dataclass(frozen=True)
class Fingerprint:
    client_photo_id: str
    role: int
    size_bytes: int
    sha256: str

    def same_as_legacy(self, summary: studio_pb2.PhotoSummary) -> bool:
        """For a photo stored before digests were kept: all there is to compare."""
        return (self.role, self.size_bytes) == (summary.role, summary.size_bytes)


def fingerprint(client_photo_id: str, role: int, data: bytes | bytearray) -> Fingerprint:
    digest = hashlib.sha256(f"{role}\0".encode())
    digest.update(data)
    return Fingerprint(client_photo_id, role, len(data), digest.hexdigest())


def entry_name(tenant_id: str, subject_id: str, client_photo_id: str) -> str:
    return idempotency_entry(tenant_id, PHOTO_KIND, f"{subject_id}\0{client_photo_id}")


async def _digest_of(bus: Bus, entry: str) -> str | None:
    stored = await bus.kv_get(topology.IDEMPOTENCY_BUCKET, entry, state_pb2.IdempotencyEntry)
    return None if stored is None else stored.request_sha256


async def verify_repeats(
    bus: Bus, tenant_id: str, subject_id: str, repeats: list[tuple[Fingerprint, studio_pb2.PhotoSummary]]
) -> None:
    """Photos sent again under the id of a photo the subject has must be that photo, else DifferentPhoto."""
    for sent, earlier in repeats:
        digest = await _digest_of(bus, entry_name(tenant_id, subject_id, sent.client_photo_id))
        same = sent.sha256 == digest if digest is not None else sent.same_as_legacy(earlier)
        if not same:
            raise DifferentPhoto(sent.client_photo_id)


async def _claim_one(bus: Bus, entry: str, sent: Fingerprint, resource_id: str) -> bool:
    """True when this call created the entry; False when it was there already, for the same photo."""
    record = state_pb2.IdempotencyEntry(
        resource_id=resource_id, request_sha256=sent.sha256, created_ms=int(time.time() * 1000)
    ).SerializeToString()
    for _ in range(CLAIM_ATTEMPTS):
        if await bus.kv_create(topology.IDEMPOTENCY_BUCKET, entry, record):
            return True
        digest = await _digest_of(bus, entry)
        if digest is None:  # given back in between (its stream failed): claim again
            continue
        if digest != sent.sha256:
            raise DifferentPhoto(sent.client_photo_id)
        return False
    raise RuntimeError(f"photo digest entry {entry} is contended")


async def claim(bus: Bus, tenant_id: str, subject_id: str, photos: list[Fingerprint]) -> list[str]:
    """Bind each id to its photo; the entries this call created (to give back should the stream fail).
    A photo whose id is bound to another photo raises DifferentPhoto, with nothing left claimed."""
    created: list[str] = []
    try:
        for sent in photos:
            entry = entry_name(tenant_id, subject_id, sent.client_photo_id)
            if await _claim_one(bus, entry, sent, subject_id):
                created.append(entry)
    except BaseException:
        await release(bus, created)
        raise
    return created


async def release(bus: Bus, entries: list[str]) -> None:
    """Best effort: a failure here must not hide the error that made the stream fail."""
    for entry in entries:
        with contextlib.suppress(Exception):
            await bus.kv_purge(topology.IDEMPOTENCY_BUCKET, entry)
