"""One active dispatcher across ingest replicas: a lease in the scheduler bucket, taken with a
compare-and-set on the key's revision and renewed well before it runs out. A replica that dies
stops renewing; another takes over once the lease has expired."""

from __future__ import annotations

import contextlib
import time

from nats.js.errors import KeyNotFoundError
from studio.v1 import state_pb2

from services.common import topology
from services.common.bus import Bus

LEASE_KEY = "dispatcher-lease"


class Lease:
    def __init__(self, bus: Bus, holder: str, duration_s: float) -> None:
        self.bus, self.holder, self.duration_s = bus, holder, duration_s

    async def hold(self) -> bool:
        """Take or renew the lease; False while another live holder has it (or it just won a race)."""
        bucket = self.bus.bucket(topology.SCHEDULER_BUCKET)
        now_ms = int(time.time() * 1000)
        mine = state_pb2.SchedulerLease(holder=self.holder, expires_at_ms=now_ms + int(self.duration_s * 1000))
        try:
            entry = await bucket.get(LEASE_KEY)
        except KeyNotFoundError:
            entry = None
        try:
            if entry is None or entry.value is None:
                await bucket.create(LEASE_KEY, mine.SerializeToString())
                return True
            current = state_pb2.SchedulerLease.FromString(entry.value)
            if current.holder != self.holder and current.expires_at_ms > now_ms:
                return False
            await bucket.update(LEASE_KEY, mine.SerializeToString(), last=entry.revision)
            return True
        except Exception as error:  # nats-py: KeyWrongLastSequenceError / APIError when another replica won
            if "wrong last sequence" in str(error).lower() or "exists" in str(error).lower():
                return False
            raise

    async def release(self) -> None:
        """Give the lease up on a clean stop, so another replica need not wait it out."""
        with contextlib.suppress(Exception):
            entry = await self.bus.bucket(topology.SCHEDULER_BUCKET).get(LEASE_KEY)
            if state_pb2.SchedulerLease.FromString(entry.value).holder == self.holder:
                await self.bus.bucket(topology.SCHEDULER_BUCKET).delete(LEASE_KEY, last=entry.revision)
