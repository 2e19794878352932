"""Reading an UploadPhotos stream within its bounds. The whole stream is held before anything is stored (all or
nothing), so what would refuse it is checked as it arrives: the first header against the subject (it exists and is
the caller's) and the tenant's quotas, before a chunk is read; each later header and chunk against what the subject
and the day's byte quota still have room for, so a stream past them is no longer kept. The reservations made after
the stream (upload_photos._hold) keep the last word; these checks only refuse early what they would refuse late."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cached_property

import grpc
from studio.v1 import common_pb2, state_pb2, studio_pb2

from services.common.image_formats import SIGNATURE_BYTES, is_image_signature
from services.ingest import fields, photo_digests, quotas
from services.ingest.context import IngestContext

MAX_PHOTO_BYTES = 25 * 1024 * 1024
MAX_PHOTOS_PER_STREAM = 60
MAX_STREAM_BYTES = 256 * 1024 * 1024
# Every message costs a fixed overhead whatever it carries, so bound their number too. A client is
# expected to send chunks of 16 KiB or more (studio_client sends 256 KiB) except each photo's last:
# a header and a short last chunk per photo, plus the stream's bytes in 16 KiB chunks (16,504 messages).
MIN_AVERAGE_CHUNK_BYTES = 16 * 1024
MAX_STREAM_MESSAGES = 2 * MAX_PHOTOS_PER_STREAM + MAX_STREAM_BYTES // MIN_AVERAGE_CHUNK_BYTES
UPLOAD_BYTES_QUOTA = "max_upload_bytes_per_day"
ROLES = (common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE)
# Upload streams one ingest process handles at once: each may hold up to MAX_STREAM_BYTES. One more waits
# this long for a slot.
MAX_UPLOAD_STREAMS_ENV = "STUDIO_MAX_UPLOAD_STREAMS"
DEFAULT_MAX_UPLOAD_STREAMS = 16
UPLOAD_SLOT_WAIT_S = 30.0
# Initial metadata sent once the stream's first header is admitted (studio_client waits for it before chunks).
UPLOAD_ADMITTED_METADATA = "studio-upload-admitted"


class UploadError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def invalid(reason: str) -> UploadError:
    return UploadError(grpc.StatusCode.INVALID_ARGUMENT, reason)


class StreamSlots:
    """Bounds the upload streams handled at once in this process. A stream over the bound waits for a slot, unread
    (HTTP/2 flow control holds its client back), for at most `wait_s`, then is refused with RESOURCE_EXHAUSTED: a
    burst of tenants is served in turn, a lasting overload is told so."""

    def __init__(self, limit: int, wait_s: float = UPLOAD_SLOT_WAIT_S) -> None:
        self.limit, self.wait_s = limit, wait_s
        self._free = asyncio.Semaphore(limit)

    @classmethod
    def from_env(cls) -> StreamSlots:
        return cls(int(os.environ.get(MAX_UPLOAD_STREAMS_ENV) or DEFAULT_MAX_UPLOAD_STREAMS))

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held while a stream is read and handled; raises UploadError when none frees in time."""
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise UploadError(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"this ingest server is handling its maximum of {self.limit} upload streams "
                f"({MAX_UPLOAD_STREAMS_ENV}) and none ended within {self.wait_s:g} s; try again shortly"
            )) from None
        try:
            yield
        finally:
            self._free.release()


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
            raise invalid(f"chunk {self.chunks} of photo '{self.header.filename}' is empty")
        if self.size + len(chunk) > MAX_PHOTO_BYTES:
            raise invalid(f"photo '{self.header.filename}' exceeds {MAX_PHOTO_BYTES // (1024 * 1024)} MiB")
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
        self.skip()
        part = request.WhichOneof("part")
        if part == "header":
            self._start_photo(request.header)
        elif part == "chunk":
            self._add_chunk(request.chunk)
        else:
            raise invalid(f"message {self.messages} of the stream is empty: it needs a header or a chunk")

    def skip(self) -> None:
        """Count a message (and keep nothing of it)."""
        self.messages += 1
        if self.messages > MAX_STREAM_MESSAGES:
            raise invalid(f"one upload stream carries at most {MAX_STREAM_MESSAGES} messages; send larger chunks")

    def _start_photo(self, header: studio_pb2.PhotoHeader) -> None:
        _validate_header(header)
        client_id = header.client_photo_id
        if client_id and client_id in self.client_ids:
            raise invalid(f"client_photo_id {client_id!r} repeats")
        self.client_ids.add(client_id)
        if len(self.photos) >= MAX_PHOTOS_PER_STREAM:
            raise invalid(f"at most {MAX_PHOTOS_PER_STREAM} photos")
        self.photos.append(IncomingPhoto(header))

    def _add_chunk(self, chunk: bytes) -> None:
        if not self.photos:
            raise invalid("stream must start with a photo header")
        self.photos[-1].add(chunk)
        self.stream_bytes += len(chunk)
        if self.stream_bytes > MAX_STREAM_BYTES:
            raise invalid(f"one upload stream carries at most {MAX_STREAM_BYTES // (1024 * 1024)} MiB; split the set")


@dataclass
class UploadGate:
    """Checks the stream against its subject and the tenant's quotas as it arrives. A photo sent again under a
    client_photo_id the subject has (a resumed stream) costs no quota, so it is not counted.

    The first header is answered at once: refused (the call ends), or admitted with the initial metadata
    UPLOAD_ADMITTED_METADATA, which a client may wait for before it sends chunks. A quota passed later is
    answered once the client has sent the rest, which is read and dropped: a grpc aio client that is still
    writing when its call ends sees INTERNAL instead of the server's status (grpc/grpc#36066)."""

    ctx: IngestContext
    tenant: state_pb2.TenantRecord
    context: grpc.aio.ServicerContext
    subject: state_pb2.SubjectRecord | None = None
    stored_ids: set[str] = field(default_factory=set)  # the subject's client_photo_ids
    fresh_photos: int = 0
    fresh_bytes: int = 0
    room_bytes: int = 0  # the day's byte quota left when last looked at
    current_is_fresh: bool = False
    refused: quotas.QuotaExceeded | None = None

    async def admit(self, header: studio_pb2.PhotoHeader) -> None:
        first = self.subject is None
        if first:  # aborts with NOT_FOUND for a subject missing or another tenant's
            self.subject = await self.ctx.owned_subject(self.tenant, header.subject_id, self.context)
            self.stored_ids = {p.client_photo_id for p in self.subject.subject.photos if p.client_photo_id}
        elif header.subject_id != self.subject.subject.subject_id:
            raise invalid("one upload stream carries one subject's photos")
        self.current_is_fresh = header.client_photo_id not in self.stored_ids
        if self.current_is_fresh:
            self.fresh_photos += 1
            await self._within_quotas(self.fresh_bytes + 1, at_once=first)
        if first:
            await self.context.send_initial_metadata(((UPLOAD_ADMITTED_METADATA, "1"),))

    async def count(self, chunk_bytes: int) -> None:
        if self.current_is_fresh:
            self.fresh_bytes += chunk_bytes
            await self._within_quotas(self.fresh_bytes, at_once=False)

    async def _within_quotas(self, fresh_bytes: int, at_once: bool) -> None:
        try:
            quotas.check_photos_per_subject(self.tenant, len(self.subject.subject.photos), self.fresh_photos)
            if fresh_bytes > self.room_bytes:  # looked at again only when past the room last seen
                self.room_bytes = await quotas.check_daily_room(
                    self.ctx.bus, self.tenant, UPLOAD_BYTES_QUOTA, fresh_bytes, "byte(s)"
                )
        except quotas.QuotaExceeded as error:
            if at_once:
                raise
            self.refused = error


async def collect(requests: AsyncIterator[studio_pb2.UploadPhotosRequest], gate: UploadGate) -> list[IncomingPhoto]:
    """Read the whole stream first, so a malformed stream stores nothing at all; raises UploadError or
    QuotaExceeded. Once the gate refuses the stream, the rest is counted, not kept."""
    reader = StreamReader()
    async for request in requests:
        if gate.refused is not None:
            reader.skip()
            continue
        reader.take(request)
        if request.WhichOneof("part") == "header":
            await gate.admit(request.header)
        else:
            await gate.count(len(request.chunk))
        if gate.refused is not None:
            reader.photos.clear()
    if gate.refused is not None:
        raise gate.refused
    if not reader.photos:
        raise invalid("empty upload: no photo header received")
    for photo in reader.photos:
        _validate_content(photo)
    return reader.photos


def _validate_header(header: studio_pb2.PhotoHeader) -> None:
    if not header.subject_id:
        raise invalid("photo header needs subject_id")
    if header.role not in ROLES:
        raise invalid("photo header needs role HEADSHOT or REFERENCE")
    if not header.filename:
        raise invalid("photo header needs a filename")
    problem = fields.filename_problem(header.filename) or fields.too_long(
        "client_photo_id", header.client_photo_id, fields.MAX_CLIENT_PHOTO_ID_CHARS
    )
    if problem:
        raise invalid(problem)


def _validate_content(photo: IncomingPhoto) -> None:
    name = photo.header.filename
    if photo.size == 0:
        raise invalid(f"photo '{name}' has no bytes")
    if not is_image_signature(bytes(photo.data[:SIGNATURE_BYTES])):
        raise invalid(f"'{name}' is not a JPEG, PNG, WebP or HEIC image")
