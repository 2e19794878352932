"""Order cancellation as workers see it: ingest's CancelOrder marks the order in a KV bucket;
workers check before they start a job and poll while they work, and drop a cancelled order's job."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from services.common import topology
from services.common.bus import Bus

POLL_INTERVAL_S = 0.5


async def order_cancelled(bus: Bus, order_id: str) -> bool:
    return await bus.kv_raw(topology.CANCELLED_ORDERS_BUCKET, order_id) is not None


async def mark_cancelled(bus: Bus, order_id: str, reason: str) -> None:
    await bus.bucket(topology.CANCELLED_ORDERS_BUCKET).put(order_id, reason.encode())


class CancelWatch:
    """While open, polls the order's cancellation; `event` is set (thread-safe) once it is cancelled.
    `stopped()` (thread-safe too) is also true from the moment the order's subject is being deleted."""

    def __init__(self, bus: Bus, order_id: str, subject_id: str) -> None:
        self.bus, self.order_id, self.subject_id = bus, order_id, subject_id
        self.event = threading.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def stopped(self) -> bool:
        return self.event.is_set() or self.bus.guard.is_deleted(self.subject_id)

    async def __aenter__(self) -> CancelWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self._task:
            # Also a flag: Python 3.11's wait_for (in nats-py's request) drops a cancellation that lands as the
            # reply arrives, and the poll would go on forever, holding the job open with no event and no log.
            self._closing = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while not (self.event.is_set() or self._closing):
            with contextlib.suppress(Exception):  # a NATS hiccup must not end the job; poll again
                if await order_cancelled(self.bus, self.order_id):
                    self.event.set()
            if self._closing:
                return
            await asyncio.sleep(POLL_INTERVAL_S)
