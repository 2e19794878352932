"""Sealed writes under way, as every replica of every service sees them.

A replica's own DeletionGuard knows only its own writes. Before a sealed write, the writer records a
lease in NATS (`<subject>.<writer>.<n>`); the deletion's purge, on whichever replica holds it, waits
until the subject has none left. With the data-key cache's lifetime (services/common/purge.py), that
leaves no write to land after the purge: a write whose lease the purge did not see looks its key up
after the key was shredded. Unsealed writes that follow a sealed one (a KV record or mark) share its
lease (SealedStore.writing), and so its refusal. A writer renews its lease while the write lasts, so the purge
tells a slow write (waited for) from a writer that died holding one (its lease dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator

from services.common import topology
from services.common.bus import Bus, beating

log = logging.getLogger(__name__)

POLL_S = 0.05
RENEW_S = 5.0  # a writer renews its lease this often while the write lasts (a large checkpoint to a slow store)
MISSED_RENEWALS = 3  # a lease not renewed for this many periods was left by a writer that died


class LeasesStillHeld(RuntimeError):
    """Writes of the subject are still under way (their leases are renewed); the purge must wait longer."""


class WriteLeases:
    def __init__(self, bus: Bus, renew_s: float = RENEW_S) -> None:
        self.bus = bus
        self.renew_s = renew_s
        self.stale_s = MISSED_RENEWALS * renew_s
        self._writer = secrets.token_hex(6)
        self._numbers = itertools.count()

    @contextlib.asynccontextmanager
    async def holding(self, subject_id: str) -> AsyncIterator[None]:
        key = f"{subject_id}.{self._writer}.{next(self._numbers)}"
        await self.bus.kv_create(topology.WRITE_LEASES_BUCKET, key, _now())
        bucket = self.bus.bucket(topology.WRITE_LEASES_BUCKET)
        try:
            async with beating(self.renew_s, lambda: bucket.put(key, _now()), "a write lease was not renewed"):
                yield
        finally:
            await self.bus.kv_purge(topology.WRITE_LEASES_BUCKET, key)

    async def held(self, subject_id: str) -> list[str]:
        return await self.bus.kv_keys_matching(topology.WRITE_LEASES_BUCKET, f"{subject_id}.>")

    async def wait_until_none(self, subject_id: str, timeout_s: float) -> None:
        """Wait for every replica's writes of the subject to end. Leases not renewed for stale_s (a writer that died
        holding one) are dropped, since they name the subject; LeasesStillHeld when writes go on past `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        next_stale_check = time.monotonic()
        while held := await self.held(subject_id):
            if time.monotonic() >= next_stale_check:  # a lease goes stale in renewal periods: not read every poll
                next_stale_check = time.monotonic() + self.renew_s
                if await self._drop_stale(held):
                    continue
            if time.monotonic() > deadline:
                raise LeasesStillHeld(f"{len(held)} writes of the subject still under way after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)

    async def _drop_stale(self, held: list[str]) -> bool:
        """Purge the leases among `held` that their writers stopped renewing; whether there were any."""
        found = await asyncio.gather(*map(self._stale, held))
        stale = [key for key, is_stale in zip(held, found, strict=True) if is_stale]
        if stale:
            log.warning("%d writes of a deleted subject stopped renewing their leases; dropping them", len(stale))
            await asyncio.gather(*(self.bus.kv_purge(topology.WRITE_LEASES_BUCKET, key) for key in stale))
        return bool(stale)

    async def _stale(self, key: str) -> bool:
        renewed = await self.bus.kv_raw(topology.WRITE_LEASES_BUCKET, key)
        if renewed is None:  # ended meanwhile
            return False
        try:
            renewed_at = float(renewed.decode())
        except ValueError:
            return True
        return time.time() - renewed_at > self.stale_s


def _now() -> bytes:
    return f"{time.time():.3f}".encode()
