"""Client side of the vault: fetch a subject's data key for a purpose, and read/write blobs sealed
under it. Keys live only in memory, briefly; they are never logged."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from studio.v1 import privacy_pb2, privacy_pb2_grpc

from services.common.blobstore import BlobStore
from services.common.deletion_guard import DeletionGuard
from services.common.envelope import object_aad, open_sealed, seal
from services.common.secrets import SERVICE_TOKEN_METADATA
from services.common.tls import internal_channel
from services.common.write_leases import WriteLeases

KeyPurpose = privacy_pb2.KeyPurpose
# How long a fetched data key is used without asking the vault again. A deletion's purge waits this long
# after the key is shredded (services/common/purge.py), so it is also the least time a deletion takes.
DATA_KEY_TTL_ENV = "STUDIO_DATA_KEY_TTL_S"
DEFAULT_DATA_KEY_TTL_S = 10.0
LARGE_PAYLOAD_BYTES = 1 << 20
# Subjects this task is writing (SealedStore.writing): a put inside the block shares its guard count and lease.
_WRITING: ContextVar[frozenset[str]] = ContextVar("studio_writing", default=frozenset())


def data_key_ttl_s() -> float:
    return float(os.environ.get(DATA_KEY_TTL_ENV) or DEFAULT_DATA_KEY_TTL_S)


class VaultStorageFull(Exception):
    """The vault refuses keys because its store cannot grow (RESOURCE_EXHAUSTED): an operator must make room.
    Not the job's fault: workers hold their jobs until the vault hands keys out again (services/common/workqueue.py)."""


@dataclass(frozen=True)
class DataKey:
    key: bytes = field(repr=False)
    key_id: str
    key_version: int


# Longer than a GetDataKey call may take (its timeout): an answer to a request sent before the forget is not cached.
FORGET_MARK_S = 60.0


class VaultClient:
    def __init__(self, address: str, service_token: str) -> None:
        self._channel = internal_channel(address)
        self._stub = privacy_pb2_grpc.PrivacyStub(self._channel)
        self._metadata = ((SERVICE_TOKEN_METADATA, service_token),) if service_token else ()
        self._cache: dict[tuple[str, str, int], tuple[float, DataKey]] = {}
        self._forgotten_at: dict[str, float] = {}  # subjects being deleted: a key asked for before is not cached
        self.key_ttl_s = data_key_ttl_s()

    @classmethod
    def from_token_file(cls, address: str, token_file: Path) -> VaultClient:
        return cls(address, token_file.read_text().strip())

    @property
    def stub(self) -> privacy_pb2_grpc.PrivacyStub:
        return self._stub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def data_key(self, tenant_id: str, subject_id: str, purpose: int) -> DataKey:
        cache_key = (tenant_id, subject_id, purpose)
        self._drop_expired()
        cached = self._cache.get(cache_key)
        if cached:
            return cached[1]
        asked_at = time.monotonic()  # not the answer's time: the vault may shred the key while the answer travels
        try:
            response = await self._stub.GetDataKey(
                privacy_pb2.GetDataKeyRequest(tenant_id=tenant_id, subject_id=subject_id, purpose=purpose),
                metadata=self._metadata, timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise VaultStorageFull(error.details()) from error
            raise
        data_key = DataKey(response.data_key, response.key_id, response.key_version)
        if self._forgotten_at.get(subject_id, -1.0) < asked_at:  # else the deletion came while the answer travelled
            self._cache[cache_key] = (asked_at, data_key)
        return data_key

    def _drop_expired(self) -> None:
        """Expired keys leave memory at the next fetch of any key, not only at the next use of their own: a
        subject never touched again must not keep its key in clear here until its deletion."""
        now = time.monotonic()
        expired = [key for key, (asked_at, _) in self._cache.items() if now - asked_at >= self.key_ttl_s]
        for cache_key in expired:
            del self._cache[cache_key]

    def forget_subject(self, subject_id: str) -> None:
        for cache_key in [k for k in self._cache if k[1] == subject_id]:
            del self._cache[cache_key]
        now = time.monotonic()
        self._forgotten_at = {s: at for s, at in self._forgotten_at.items() if now - at < FORGET_MARK_S}
        self._forgotten_at[subject_id] = now

    def holds_key_of(self, subject_id: str) -> bool:
        return any(cache_key[1] == subject_id for cache_key in self._cache)

    async def close(self) -> None:
        await self._channel.close()


class SealedStore:
    """The object store as services see it: plaintext in, ciphertext stored, bound to its name."""

    def __init__(self, blobs: BlobStore, vault: VaultClient, guard: DeletionGuard | None = None,
                 leases: WriteLeases | None = None) -> None:
        self.blobs = blobs
        self.vault = vault
        self.guard = guard or DeletionGuard()
        self.leases = leases  # None: a single-process store (tools, tests), whose guard sees every write

    @contextlib.asynccontextmanager
    async def writing(self, subject_id: str) -> AsyncIterator[None]:
        """Around writes of the subject's data: a purge on any replica waits for them to end. Unsealed writes (KV
        marks) belong after a sealed put inside the same block, which is refused once the key is shredded. Nested
        (a put inside the block) it takes no second lease."""
        held = _WRITING.get()
        if subject_id in held:
            self.guard.check(subject_id)
            yield
            return
        async with self.guard.writing(subject_id), self._lease(subject_id):
            entered = _WRITING.set(held | {subject_id})
            try:
                yield
            finally:
                _WRITING.reset(entered)

    async def put(self, tenant_id: str, subject_id: str, key: str, plaintext: bytes, purpose: int) -> None:
        # The lease comes before the key lookup: a purge that cannot see the lease outlasts any cached key.
        async with self.writing(subject_id):
            data_key = await self.vault.data_key(tenant_id, subject_id, purpose)
            sealed = await _sized(len(plaintext), functools.partial(
                seal, data_key.key, key_id=data_key.key_id, key_version=data_key.key_version,
                aad=object_aad(tenant_id, subject_id, key), plaintext=plaintext,
            ))
            await self.blobs.put(key, sealed)

    def _lease(self, subject_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.leases.holding(subject_id) if self.leases else contextlib.nullcontext()

    async def get(self, tenant_id: str, subject_id: str, key: str, purpose: int) -> bytes:
        self.guard.check(subject_id)
        data_key = await self.vault.data_key(tenant_id, subject_id, purpose)
        sealed = await self.blobs.get(key)
        return await _sized(len(sealed), functools.partial(
            open_sealed, data_key.key, aad=object_aad(tenant_id, subject_id, key), blob=sealed))


async def _sized(size: int, work: Callable[[], bytes]) -> bytes:
    """Small payloads sealed or opened in place; large ones (a LoRA, a checkpoint) in a thread, off the event loop."""
    return work() if size < LARGE_PAYLOAD_BYTES else await asyncio.to_thread(work)
