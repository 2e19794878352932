"""The per-process bound on upload streams: one stream over it waits for a slot, and is refused with a reason
when none frees in time."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.ingest.upload_stream import MAX_UPLOAD_STREAMS_ENV, StreamSlots, UploadError


async def test_a_stream_over_the_bound_is_refused_when_no_slot_frees_in_time() -> None:
    slots = StreamSlots(2, wait_s=0.2)
    async with slots.slot(), slots.slot():
        with pytest.raises(UploadError) as refused:
            async with slots.slot():
                pass
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "maximum of 2 upload streams" in refused.value.reason and MAX_UPLOAD_STREAMS_ENV in refused.value.reason
    async with slots.slot(), slots.slot():  # both given back, and the refused stream took none
        pass


async def test_a_stream_over_the_bound_takes_the_first_slot_freed() -> None:
    slots = StreamSlots(1, wait_s=5)
    order: list[str] = []

    async def stream(name: str, hold_s: float) -> None:
        async with slots.slot():
            order.append(f"{name} in")
            await asyncio.sleep(hold_s)
            order.append(f"{name} out")

    await asyncio.gather(stream("first", 0.2), stream("second", 0))
    assert order == ["first in", "first out", "second in", "second out"]


async def test_a_stream_that_fails_gives_its_slot_back() -> None:
    slots = StreamSlots(1, wait_s=0.1)
    with pytest.raises(ValueError):
        async with slots.slot():
            raise ValueError("the stream broke")
    async with slots.slot():
        pass


def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_UPLOAD_STREAMS_ENV, "3")
    assert StreamSlots.from_env().limit == 3
    monkeypatch.delenv(MAX_UPLOAD_STREAMS_ENV)
    assert StreamSlots.from_env().limit > 0
