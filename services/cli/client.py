"""A thin tenant client over the public Studio API (used by `studio demo` and the tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc
from studio.v1 import common_pb2, privacy_pb2, studio_pb2, studio_pb2_grpc

from services.common.secrets import API_KEY_METADATA

CHUNK_BYTES = 256 * 1024
PORTRAIT_CONSENT = common_pb2.ConsentRecord(
    agreement_version="2026-01", scopes=[common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION], retention_days=30
)


class StudioClient:
    def __init__(self, endpoint: str, api_key: str) -> None:
        self.channel = grpc.aio.insecure_channel(endpoint)
        self.stub = studio_pb2_grpc.StudioStub(self.channel)
        self.metadata = ((API_KEY_METADATA, api_key),)

    async def close(self) -> None:
        await self.channel.close()

    async def create_subject(self, external_ref: str = "", consent=PORTRAIT_CONSENT, idempotency_key: str = ""):
        response = await self.stub.CreateSubject(
            studio_pb2.CreateSubjectRequest(
                external_ref=external_ref, consent=consent, idempotency_key=idempotency_key
            ),
            metadata=self.metadata, timeout=30,
        )
        return response.subject

    async def upload(
        self, subject_id: str, photos: Sequence[tuple[Path, int]], on_bytes: Callable[[int], None] = lambda n: None
    ) -> list[studio_pb2.PhotoSummary]:
        """photos: (path, role). One stream for the whole set; on_bytes reports progress."""

        async def requests() -> AsyncIterator[studio_pb2.UploadPhotosRequest]:
            for path, role in photos:
                header = studio_pb2.PhotoHeader(subject_id=subject_id, role=role, filename=path.name)
                yield studio_pb2.UploadPhotosRequest(header=header)
                data = path.read_bytes()
                for offset in range(0, len(data), CHUNK_BYTES):
                    chunk = data[offset : offset + CHUNK_BYTES]
                    yield studio_pb2.UploadPhotosRequest(chunk=chunk)
                    on_bytes(len(chunk))

        response = await self.stub.UploadPhotos(requests(), metadata=self.metadata, timeout=600)
        return list(response.photos)

    async def create_order(self, subject_id: str, styles: Sequence[str], count: int, idempotency_key: str = ""):
        response = await self.stub.CreateOrder(
            studio_pb2.CreateOrderRequest(
                subject_id=subject_id, styles=styles, count=count, idempotency_key=idempotency_key
            ),
            metadata=self.metadata, timeout=30,
        )
        return response.order

    def watch(self, order_id: str, timeout_s: float = 1800):
        return self.stub.WatchOrder(
            studio_pb2.WatchOrderRequest(order_id=order_id), metadata=self.metadata, timeout=timeout_s
        )

    async def get_order(self, order_id: str):
        response = await self.stub.GetOrder(
            studio_pb2.GetOrderRequest(order_id=order_id), metadata=self.metadata, timeout=30
        )
        return response.order

    async def download(self, order_id: str, portrait_id: str) -> bytes:
        parts = []
        stream = self.stub.DownloadPortrait(
            studio_pb2.DownloadPortraitRequest(order_id=order_id, portrait_id=portrait_id),
            metadata=self.metadata, timeout=120,
        )
        async for response in stream:
            if response.HasField("chunk"):
                parts.append(response.chunk)
        return b"".join(parts)

    async def delete_subject(self, subject_id: str):
        response = await self.stub.DeleteSubject(
            studio_pb2.DeleteSubjectRequest(subject_id=subject_id), metadata=self.metadata, timeout=60
        )
        return response.deletion

    async def revoke_consent(self, subject_id: str):
        response = await self.stub.RevokeConsent(
            studio_pb2.RevokeConsentRequest(subject_id=subject_id), metadata=self.metadata, timeout=60
        )
        return response.deletion

    async def get_deletion(self, deletion_id: str = "", subject_id: str = ""):
        response = await self.stub.GetDeletion(
            studio_pb2.GetDeletionRequest(deletion_id=deletion_id, subject_id=subject_id),
            metadata=self.metadata, timeout=30,
        )
        return response.deletion

    async def wait_for_certificate(
        self, deletion_id: str, timeout_s: float = 120, on_progress: Callable[[object], None] = lambda d: None,
        poll_s: float = 0.25,
    ):
        """Poll GetDeletion until the vault has signed the certificate; TimeoutError names who is late."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            deletion = await self.get_deletion(deletion_id=deletion_id)
            on_progress(deletion)
            if deletion.state == privacy_pb2.DELETION_STATE_CERTIFIED:
                return deletion
            if loop.time() > deadline:
                raise TimeoutError(f"deletion {deletion_id} still waits for: {', '.join(deletion.waiting_for)}")
            await asyncio.sleep(poll_s)

    async def list_styles(self, timeout_s: float = 10) -> list[studio_pb2.StylePreset]:
        response = await self.stub.ListStyles(studio_pb2.ListStylesRequest(), metadata=self.metadata, timeout=timeout_s)
        return list(response.styles)
