"""Sealed writes under way, as every replica of every service sees them.

A replica's own DeletionGuard knows only its own writes. Before a sealed write, the writer records a
lease in NATS (`<subject>.<writer>.<n>`); the deletion's purge, on whichever replica holds it, waits
until the subject has none left. With the data-key cache's lifetime (services/common/purge.py), that
leaves no write to land after the purge: a write whose lease the purge did not see looks its key up
after the key was shredded. Unsealed writes that follow a sealed one (a KV record or mark) share its
lease (SealedStore.writing), and so its refusal."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator

from services.common import topology
from services.common.bus import Bus

log = logging.getLogger(__name__)

POLL_S = 0.05


class WriteLeases:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._writer = secrets.token_hex(6)
        self._numbers = itertools.count()

    @contextlib.asynccontextmanager
    async def holding(self, subject_id: str) -> AsyncIterator[None]:
        key = f"{subject_id}.{self._writer}.{next(self._numbers)}"
        await self.bus.kv_create(topology.WRITE_LEASES_BUCKET, key, b"")
        try:
            yield
        finally:
            await self.bus.kv_purge(topology.WRITE_LEASES_BUCKET, key)

    async def held(self, subject_id: str) -> list[str]:
        return await self.bus.kv_keys_matching(topology.WRITE_LEASES_BUCKET, f"{subject_id}.>")

    async def wait_until_none(self, subject_id: str, timeout_s: float) -> None:
        """Wait for every replica's writes of the subject to end; after `timeout_s` the leases left (a writer that
        died holding one) are dropped, since they name the subject."""
        deadline = time.monotonic() + timeout_s
        while held := await self.held(subject_id):
            if time.monotonic() > deadline:
                log.warning("%d writes of a deleted subject did not end in %.0f s; dropping their leases",
                            len(held), timeout_s)
                await self.bus.kv_purge_matching(topology.WRITE_LEASES_BUCKET, f"{subject_id}.>")
                return
            await asyncio.sleep(POLL_S)
