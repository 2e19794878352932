"""Key listings against a real nats-server past what one answer of the server names."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common import topology
from services.common.bus import Bus
from services.common.objects import new_id

pytestmark = pytest.mark.asyncio(loop_scope="session")
ONE_ANSWER = 100_000  # the subjects one STREAM.INFO answer names at most


async def test_every_matching_key_is_listed_past_one_answer_of_the_server(bus: Bus) -> None:
    tenant = new_id("tenant")
    count = ONE_ANSWER + 50
    for n in range(count):  # plain publishes: the bucket's stream stores them as keys, fast
        await bus.client.publish(f"$KV.{topology.TENANT_INDEX_BUCKET}.{tenant}.s.{n:013d}.subject{n}", b"")
    await bus.client.flush()
    try:
        deadline = time.monotonic() + 30
        while len(keys := await bus.kv_keys_matching(topology.TENANT_INDEX_BUCKET, f"{tenant}.s.>")) < count:
            assert time.monotonic() < deadline, f"{len(keys)} keys listed, not {count}"
            await asyncio.sleep(0.2)  # the stream stores plain publishes a moment after they arrive
        assert len(keys) == len(set(keys)) == count
        assert f"{tenant}.s.{count - 1:013d}.subject{count - 1}" in keys  # the newest, listed first by ingest
    finally:
        await bus.kv_purge_matching(topology.TENANT_INDEX_BUCKET, f"{tenant}.>")
