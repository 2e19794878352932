"""Faults NATS itself produces: a stream that refuses what is published to it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
