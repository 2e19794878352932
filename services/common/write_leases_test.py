"""Write leases on a real nats-server: a purge waits for writes under way on any replica, drops the leases of
writers that died, and refuses to drop those of writes that go on."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from services.common import topology, write_leases
from services.common.bus import Bus
from services.common.write_leases import LeasesStillHeld, WriteLeases

pytestmark = pytest.mark.asyncio(loop_scope="session")
RENEW_S = 0.2


def new_subject() -> str:
    return f"subject_{secrets.token_hex(6)}"


async def test_the_purge_waits_for_a_write_under_way_and_goes_on_when_it_ends(bus: Bus) -> None:
    writer, purger, subject_id = WriteLeases(bus, RENEW_S), WriteLeases(bus, RENEW_S), new_subject()

    async def write() -> None:
        async with writer.holding(subject_id):
            await asyncio.sleep(6 * RENEW_S)  # longer than a lease lives without renewal

    writing = asyncio.create_task(write())
    await asyncio.sleep(RENEW_S / 2)
    started = time.monotonic()
    await purger.wait_until_none(subject_id, timeout_s=30)
    assert writing.done() and time.monotonic() - started >= 4 * RENEW_S  # waited for the write, not dropped it
    assert await purger.held(subject_id) == []


async def test_writes_that_go_on_past_the_wait_are_not_dropped(bus: Bus) -> None:
    writer, purger, subject_id = WriteLeases(bus, RENEW_S), WriteLeases(bus, RENEW_S), new_subject()
    async with writer.holding(subject_id):
        with pytest.raises(LeasesStillHeld):
            await purger.wait_until_none(subject_id, timeout_s=6 * RENEW_S)
        assert len(await purger.held(subject_id)) == 1
    assert await purger.held(subject_id) == []


async def test_the_lease_of_a_writer_that_died_is_dropped(bus: Bus) -> None:
    purger, subject_id = WriteLeases(bus, RENEW_S), new_subject()
    await bus.kv_create(topology.WRITE_LEASES_BUCKET, f"{subject_id}.dead-writer.0", f"{time.time():.3f}".encode())
    started = time.monotonic()
    await purger.wait_until_none(subject_id, timeout_s=30)
    assert time.monotonic() - started >= purger.stale_s - 0.1  # not before it could have been renewed
    assert await purger.held(subject_id) == []


async def test_leases_expire_unless_renewed_and_no_other_bucket_does(bus: Bus) -> None:
    """A writer killed mid-write leaves its lease behind; the bucket lets it expire instead of keeping it until its
    subject's deletion. Renewals rewrite the key, so a write under way never expires."""
    leases = await bus.js.stream_info(f"KV_{topology.WRITE_LEASES_BUCKET}")
    assert leases.config.max_age == topology.WRITE_LEASE_TTL_S > write_leases.MISSED_RENEWALS * write_leases.RENEW_S
    kept = await bus.js.stream_info(f"KV_{topology.SUBJECTS_BUCKET}")
    assert not kept.config.max_age
