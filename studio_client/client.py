"""StudioClient: the public Studio API for a chain's developers.

Every call has a deadline (its `timeout`, covering all its retries) and is retried on UNAVAILABLE
with exponential backoff and jitter. Retrying is safe: CreateSubject and CreateOrder always carry an
idempotency key (one is made up when the caller gives none), and uploads carry a client photo id per
photo, so a photo the server already has is not stored twice; an interrupted upload is resumed by
sending again what it did not confirm."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import common_pb2, privacy_pb2, studio_pb2, studio_pb2_grpc

from studio_client.retry import CountedOnce, RetryPolicy, with_retries

API_KEY_METADATA = "x-api-key"
CHUNK_BYTES = 256 * 1024
# Photos per upload stream: a lost connection costs at most one batch of re-sent bytes.
UPLOAD_BATCH = 10
# Sent by the server once an upload stream's first header is admitted (services/ingest/upload_stream.py).
UPLOAD_ADMITTED_METADATA = "studio-upload-admitted"
ADMISSION_WAIT_S = 2.0
# A watch's streams are reopened this often: the server keeps no stream forever, and a dead connection shows.
WATCH_STREAM_S = 600.0
PORTRAIT_CONSENT = common_pb2.ConsentRecord(
    agreement_version="2026-01", scopes=[common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION], retention_days=30
)
Role = int  # common_pb2.PhotoRole


@dataclass(frozen=True)
class Photo:
    """A photo to upload; `client_photo_id` defaults to a digest of the subject, role and bytes, so
    running the same upload again (even from a new process) resumes it."""

    data: bytes = field(repr=False)
    role: Role
    filename: str
    client_photo_id: str = ""

    @classmethod
    def from_path(cls, path: Path, role: Role) -> Photo:
        return cls(Path(path).read_bytes(), role, Path(path).name)

    def id_for(self, subject_id: str) -> str:
        if self.client_photo_id:
            return self.client_photo_id
        digest = hashlib.sha256(f"{subject_id}\0{self.role}\0".encode() + self.data).hexdigest()
        return f"sha256-{digest[:40]}"


@dataclass
class UploadResult:
    photos: list[studio_pb2.PhotoSummary]
    set_verdict: common_pb2.SetVerdict | None
    # Photos the server already had (sent again after an interruption).
    resumed: int = 0


@dataclass(frozen=True)
class ClientTls:
    """TLS to the public port; with cert and key, the client certificate identifies the tenant."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)  # the client's private key

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromMilliseconds(int(seconds * 1000))
    return stamp


class StudioClient:
    def __init__(
        self, endpoint: str, api_key: str = "", *, tls: ClientTls | None = None,
        retry: RetryPolicy | None = None, on_retry: Callable[[grpc.aio.AioRpcError, int], None] | None = None,
    ) -> None:
        self.channel = (grpc.aio.secure_channel(endpoint, tls.credentials()) if tls
                        else grpc.aio.insecure_channel(endpoint))
        self.stub = studio_pb2_grpc.StudioStub(self.channel)
        self.metadata = ((API_KEY_METADATA, api_key),) if api_key or not tls else ()
        self.retry = retry or RetryPolicy()
        self._on_retry = on_retry or (lambda error, attempt: None)

    async def __aenter__(self) -> StudioClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _unary(self, method, request, timeout: float):
        return await with_retries(
            self.retry, timeout, lambda left: method(request, metadata=self.metadata, timeout=left), self._on_retry
        )

    # --- subjects ---------------------------------------------------------------------------------

    async def create_subject(
        self, external_ref: str = "", consent: common_pb2.ConsentRecord = PORTRAIT_CONSENT,
        idempotency_key: str = "", timeout: float = 30,
    ) -> studio_pb2.Subject:
        request = studio_pb2.CreateSubjectRequest(
            external_ref=external_ref, consent=consent, idempotency_key=idempotency_key or f"auto-{uuid.uuid4()}"
        )
        return (await self._unary(self.stub.CreateSubject, request, timeout)).subject

    async def get_subject(self, subject_id: str, timeout: float = 30) -> studio_pb2.Subject:
        request = studio_pb2.GetSubjectRequest(subject_id=subject_id)
        return (await self._unary(self.stub.GetSubject, request, timeout)).subject

    async def list_subjects(
        self, page_size: int = 0, page_token: str = "", *, external_ref: str = "",
        created_after: float | None = None, created_before: float | None = None, timeout: float = 30,
    ) -> studio_pb2.ListSubjectsResponse:
        request = studio_pb2.ListSubjectsRequest(
            page_size=page_size, page_token=page_token, external_ref=external_ref,
            created_after=_timestamp(created_after), created_before=_timestamp(created_before),
        )
        return await self._unary(self.stub.ListSubjects, request, timeout)

    async def all_subjects(self, **filters) -> AsyncIterator[studio_pb2.Subject]:
        token = ""
        while True:
            page = await self.list_subjects(page_token=token, **filters)
            for subject in page.subjects:
                yield subject
            token = page.next_page_token
            if not token:
                return

    async def export_subject(self, subject_id: str, out, on_bytes: Callable[[int], None] = lambda n: None,
                             timeout: float = 600) -> studio_pb2.ExportInfo:
        """Write the subject's archive (tar) to the binary file `out`; a retried export starts over."""

        counted = CountedOnce(on_bytes)  # a retried export's bytes again count only beyond the first attempt's

        async def attempt(left: float) -> studio_pb2.ExportInfo:
            count = counted.attempt()
            out.seek(0)
            out.truncate()
            info = studio_pb2.ExportInfo()
            stream = self.stub.ExportSubject(studio_pb2.ExportSubjectRequest(subject_id=subject_id),
                                             metadata=self.metadata, timeout=left)
            async for response in stream:
                if response.HasField("info"):
                    info = response.info
                else:
                    out.write(response.chunk)
                    count(len(response.chunk))
            return info

        return await with_retries(self.retry, timeout, attempt, self._on_retry)

    # --- uploads ----------------------------------------------------------------------------------

    async def upload_photos(
        self, subject_id: str, photos: Sequence[Photo | tuple[Path, Role]],
        on_bytes: Callable[[int], None] = lambda n: None, batch_size: int = UPLOAD_BATCH, timeout: float = 600,
    ) -> UploadResult:
        """Upload in batches of `batch_size` photos per stream; a batch cut off is sent again, and the
        photos the server had already kept come back with `already_uploaded`."""
        items = [photo if isinstance(photo, Photo) else Photo.from_path(*photo) for photo in photos]
        ids = [item.id_for(subject_id) for item in items]
        done: dict[str, studio_pb2.PhotoSummary] = {}
        set_verdict = None
        for start in range(0, len(items), batch_size):
            batch = list(zip(items[start : start + batch_size], ids[start : start + batch_size], strict=True))
            counted = CountedOnce(on_bytes)  # a batch sent again counts its bytes once: a bar stops at 100%
            response = await with_retries(
                self.retry, timeout, lambda left, batch=batch, counted=counted: self._upload_stream(
                    subject_id, batch, counted.attempt(), left),
                self._on_retry,
            )
            done.update((summary.client_photo_id, summary) for summary in response.photos)
            set_verdict = response.set_verdict
        summaries = [done[photo_id] for photo_id in ids]
        return UploadResult(summaries, set_verdict, sum(1 for s in summaries if s.already_uploaded))

    async def upload(
        self, subject_id: str, photos: Sequence[Photo | tuple[Path, Role]],
        on_bytes: Callable[[int], None] = lambda n: None, batch_size: int = UPLOAD_BATCH, timeout: float = 600,
    ) -> list[studio_pb2.PhotoSummary]:
        return (await self.upload_photos(subject_id, photos, on_bytes, batch_size, timeout)).photos

    async def _upload_stream(
        self, subject_id: str, batch: list[tuple[Photo, str]], on_bytes: Callable[[int], None], timeout: float
    ) -> studio_pb2.UploadPhotosResponse:
        call = self.stub.UploadPhotos(metadata=self.metadata, timeout=timeout)
        write_failed = False
        try:
            for index, (photo, photo_id) in enumerate(batch):
                await call.write(studio_pb2.UploadPhotosRequest(header=studio_pb2.PhotoHeader(
                    subject_id=subject_id, role=photo.role, filename=photo.filename, client_photo_id=photo_id,
                )))
                if index == 0 and not await _admitted(call):
                    break  # refused at its first header: the call's status says why
                for offset in range(0, len(photo.data), CHUNK_BYTES):
                    chunk = photo.data[offset : offset + CHUNK_BYTES]
                    await call.write(studio_pb2.UploadPhotosRequest(chunk=chunk))
                    on_bytes(len(chunk))
            else:
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            write_failed = True  # the call ended while we wrote: its status says how
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if write_failed and error.code() == grpc.StatusCode.INTERNAL and "execute_batch" in (
                error.debug_error_string() or ""
            ):  # grpc-core's word for a send on a connection that broke: the server never answered
                raise _lost_connection(error) from error
            raise

    # --- orders -----------------------------------------------------------------------------------

    async def create_order(
        self, subject_id: str, styles: Sequence[str], count: int, idempotency_key: str = "", timeout: float = 30,
        tier: common_pb2.PriorityTier = common_pb2.PRIORITY_TIER_STANDARD,
    ) -> common_pb2.Order:
        """tier: PRIORITY_TIER_EXPRESS is dispatched ahead of standard orders (docs/scheduling.md)."""
        request = studio_pb2.CreateOrderRequest(
            subject_id=subject_id, styles=styles, count=count, tier=tier,
            idempotency_key=idempotency_key or f"auto-{uuid.uuid4()}",
        )
        return (await self._unary(self.stub.CreateOrder, request, timeout)).order

    async def list_styles(self, timeout: float = 10) -> list[studio_pb2.StylePreset]:
        """The style catalogue: every preset an order may name."""
        return list((await self._unary(self.stub.ListStyles, studio_pb2.ListStylesRequest(), timeout)).styles)

    async def get_order_with_history(self, order_id: str, timeout: float = 30) -> studio_pb2.GetOrderResponse:
        return await self._unary(self.stub.GetOrder, studio_pb2.GetOrderRequest(order_id=order_id), timeout)

    async def get_order(self, order_id: str, timeout: float = 30) -> common_pb2.Order:
        return (await self.get_order_with_history(order_id, timeout)).order

    async def list_orders(
        self, page_size: int = 0, page_token: str = "", *, subject_id: str = "", states: Sequence[int] = (),
        created_after: float | None = None, created_before: float | None = None, timeout: float = 30,
    ) -> studio_pb2.ListOrdersResponse:
        request = studio_pb2.ListOrdersRequest(
            page_size=page_size, page_token=page_token, subject_id=subject_id, states=states,
            created_after=_timestamp(created_after), created_before=_timestamp(created_before),
        )
        return await self._unary(self.stub.ListOrders, request, timeout)

    def watch(self, order_id: str, timeout_s: float | None = None,
              stream_s: float = WATCH_STREAM_S) -> AsyncIterator[studio_pb2.WatchOrderResponse]:
        """The order's events until done or failed, or DEADLINE_EXCEEDED after `timeout_s` (None: as long as the
        order runs, hours in a long queue). A dropped stream is reopened and the events already seen are
        skipped; each stream lasts at most `stream_s`, then the next one takes over, so a connection that died
        without a word is noticed."""
        return self._watch(order_id, timeout_s, stream_s)

    async def _watch(self, order_id: str, timeout_s: float | None,
                     stream_s: float) -> AsyncIterator[studio_pb2.WatchOrderResponse]:
        seen, attempt = 0, 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = stream_s if deadline is None else min(stream_s, deadline - time.monotonic())
            stream = self.stub.WatchOrder(
                studio_pb2.WatchOrderRequest(order_id=order_id), metadata=self.metadata, timeout=max(left, 0.001)
            )
            position = 0
            try:
                async for response in stream:
                    position += 1
                    # A reopened stream of a finished order may be shorter (its events expired): only its last.
                    if position > seen or response.event.WhichOneof("kind") in ("done", "failed"):
                        seen = max(seen, position)
                        yield response
                return
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    if deadline is None or time.monotonic() < deadline:
                        continue  # this stream's time is up, not the watch's: the next one takes over
                    raise
                attempt += 1
                if error.code() not in self.retry.retryable or attempt == self.retry.max_attempts:
                    raise
                self._on_retry(error, attempt)
                await asyncio.sleep(self.retry.backoff(attempt - 1))

    async def cancel_order(self, order_id: str, reason: str = "", timeout: float = 30) -> common_pb2.Order:
        request = studio_pb2.CancelOrderRequest(order_id=order_id, reason=reason)
        return (await self._unary(self.stub.CancelOrder, request, timeout)).order

    async def download(self, order_id: str, portrait_id: str, timeout: float = 120) -> bytes:
        async def attempt(left: float) -> bytes:
            parts = []
            stream = self.stub.DownloadPortrait(
                studio_pb2.DownloadPortraitRequest(order_id=order_id, portrait_id=portrait_id),
                metadata=self.metadata, timeout=left,
            )
            async for response in stream:
                if response.HasField("chunk"):
                    parts.append(response.chunk)
            return b"".join(parts)

        return await with_retries(self.retry, timeout, attempt, self._on_retry)

    # --- deletion ---------------------------------------------------------------------------------

    async def delete_subject(self, subject_id: str, timeout: float = 60):
        request = studio_pb2.DeleteSubjectRequest(subject_id=subject_id)
        return (await self._unary(self.stub.DeleteSubject, request, timeout)).deletion

    async def revoke_consent(self, subject_id: str, timeout: float = 60):
        request = studio_pb2.RevokeConsentRequest(subject_id=subject_id)
        return (await self._unary(self.stub.RevokeConsent, request, timeout)).deletion

    async def get_deletion(self, deletion_id: str = "", subject_id: str = "", timeout: float = 30):
        request = studio_pb2.GetDeletionRequest(deletion_id=deletion_id, subject_id=subject_id)
        return (await self._unary(self.stub.GetDeletion, request, timeout)).deletion

    async def wait_for_certificate(
        self, deletion_id: str, timeout_s: float = 120, on_progress: Callable[[object], None] = lambda d: None,
        poll_s: float = 0.25,
    ):
        """Poll GetDeletion until the vault has signed the certificate; TimeoutError names who is late."""
        deadline = time.monotonic() + timeout_s
        while True:
            deletion = await self.get_deletion(deletion_id=deletion_id)
            on_progress(deletion)
            if deletion.state == privacy_pb2.DELETION_STATE_CERTIFIED:
                return deletion
            if time.monotonic() > deadline:
                raise TimeoutError(f"deletion {deletion_id} still waits for: {', '.join(deletion.waiting_for)}")
            await asyncio.sleep(poll_s)


async def _admitted(call: grpc.aio.StreamUnaryCall) -> bool:
    """Whether the server took the stream's first header (its initial metadata says so): only then are chunks
    sent. A server that refuses the stream ends the call there, and chunks written into an ending call would hide
    its status (grpc aio then reports INTERNAL, grpc/grpc#36066). A server that never answers a header early is
    given ADMISSION_WAIT_S."""
    try:
        metadata = await asyncio.wait_for(call.initial_metadata(), ADMISSION_WAIT_S)
    except TimeoutError:
        return True
    return any(key == UPLOAD_ADMITTED_METADATA for key, _ in metadata or ())


def _lost_connection(error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
        details="connection lost while sending the upload stream", debug_error_string=error.debug_error_string(),
    )
