"""CancelWatch against a real nats-server: it sees a cancellation while open, and it closes promptly even when
Python 3.11's wait_for drops the cancellation of its poll."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from services.common import cancellation
from services.common.bus import Bus
from services.common.cancellation import CancelWatch, mark_cancelled

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_open_watch_sees_the_order_cancelled_and_the_subject_deleted(bus: Bus) -> None:
    order_id = f"order_{secrets.token_hex(6)}"
    async with CancelWatch(bus, order_id, "subject-a") as watch:
        await asyncio.sleep(0.2)
        assert not watch.stopped()
        await mark_cancelled(bus, order_id, "customer asked")
        await asyncio.wait_for(asyncio.to_thread(watch.event.wait), timeout=5)
        assert watch.stopped()
    async with CancelWatch(bus, f"order_{secrets.token_hex(6)}", "subject-b") as watch:
        bus.guard.mark_deleted("subject-b")
        assert watch.stopped() and not watch.event.is_set()


async def test_a_watch_closes_when_its_poll_swallows_the_cancellation(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    polling = asyncio.Event()

    async def answered_as_the_watch_closes(bus: Bus, order_id: str) -> bool:
        polling.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return False  # what wait_for does in Python 3.11 when the reply is already there: the reply wins
        return False

    monkeypatch.setattr(cancellation, "order_cancelled", answered_as_the_watch_closes)
    watch = CancelWatch(bus, f"order_{secrets.token_hex(6)}", "subject-c")
    await watch.__aenter__()
    await polling.wait()
    closing = asyncio.create_task(watch.__aexit__(None, None, None))
    done, _ = await asyncio.wait({closing}, timeout=cancellation.POLL_INTERVAL_S + 2)
    watch.event.set()  # ends a poll that went on, so that the test ends either way
    await closing
    assert closing in done, "the watch went on polling after it was closed"
