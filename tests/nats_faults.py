"""Faults NATS itself produces: a stream that refuses what is published to it, a store that is full."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.js.api import DiscardPolicy

from services.common.bus import Bus


@asynccontextmanager
async def messages_capped(bus: Bus, stream: str, max_msg_size: int) -> AsyncIterator[None]:
    """While inside, `stream` refuses every message larger than `max_msg_size` bytes; its config is restored after."""
    config = (await bus.js.stream_info(stream)).config
    await bus.js.update_stream(dataclasses.replace(config, max_msg_size=max_msg_size))
    try:
        yield
    finally:
        await bus.js.update_stream(config)


@asynccontextmanager
async def store_full(bus: Bus, stream: str) -> AsyncIterator[None]:
    """While inside, `stream` (KV_<bucket> for a bucket) is at its budget: its max_bytes is what it holds now, so it
    refuses every new message as a stream or bucket at its STUDIO_NATS_STORE_BYTES share does; restored after."""
    info = await bus.js.stream_info(stream)
    config = info.config
    at_budget = dataclasses.replace(config, max_bytes=max(info.state.bytes, 1), discard=DiscardPolicy.NEW)
    await bus.js.update_stream(at_budget)
    try:
        yield
    finally:
        await bus.js.update_stream(config)
