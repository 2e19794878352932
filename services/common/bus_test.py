"""The declared topology against a real nats-server: idempotent declaration, KV helpers, dedup."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError
from studio.v1 import state_pb2

from services.common import bus as bus_module
from services.common import topology
from services.common.bus import Bus
from services.common.launchers.nats import NatsServer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_declaring_twice_is_harmless_and_kv_round_trips(nats_server: NatsServer) -> None:
    first = await Bus.connect(nats_server.url, name="a")
    second = await Bus.connect(nats_server.url, name="b")  # a second service declaring the same topology
    try:
        record = state_pb2.TenantRecord(tenant_id="t1", name="Studio One", api_key_hash="h1")
        await first.kv_put(topology.TENANTS_BUCKET, "h1", record)
        assert await second.kv_get(topology.TENANTS_BUCKET, "h1", state_pb2.TenantRecord) == record
        assert await second.kv_get(topology.TENANTS_BUCKET, "missing", state_pb2.TenantRecord) is None
        assert "h1" in await second.kv_keys(topology.TENANTS_BUCKET)
    finally:
        await first.close()
        await second.close()


async def test_kv_create_only_once(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, name="idem")
    try:
        assert await bus.kv_create(topology.IDEMPOTENCY_BUCKET, "order.abc", b"order_1")
        assert not await bus.kv_create(topology.IDEMPOTENCY_BUCKET, "order.abc", b"order_2")
        assert await bus.kv_raw(topology.IDEMPOTENCY_BUCKET, "order.abc") == b"order_1"
    finally:
        await bus.close()


async def test_duplicate_job_ids_are_dropped(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, name="dedup")
    try:
        before = (await bus.js.stream_info(topology.RENDER_QUEUE.stream)).state.messages
        job = state_pb2.TenantRecord(tenant_id="not-really-a-job")
        await bus.publish(topology.RENDER_SUBJECT, job, msg_id="render-dedup-1")
        await bus.publish(topology.RENDER_SUBJECT, job, msg_id="render-dedup-1")
        after = (await bus.js.stream_info(topology.RENDER_QUEUE.stream)).state.messages
        assert after == before + 1
        await bus.js.purge_stream(topology.RENDER_QUEUE.stream)
    finally:
        await bus.close()


async def test_a_publish_waits_for_a_stream_that_is_not_answering_yet(nats_server: NatsServer) -> None:
    """No responders means nothing was stored: the publish is tried again, as when a stream was just created or a
    cluster is electing its leader (a 3-node deploy test once published before the new stream answered)."""
    bus = await Bus.connect(nats_server.url, name="late-stream")
    record = state_pb2.TenantRecord(tenant_id="late")
    try:
        publishing = asyncio.create_task(bus.publish("bustest.late.one", record, msg_id="late-1"))
        await asyncio.sleep(0.05)  # the first attempt has found no stream
        await bus.js.add_stream(StreamConfig(name="BUSTEST_LATE", subjects=["bustest.late.>"]))
        await publishing
        assert (await bus.js.stream_info("BUSTEST_LATE")).state.messages == 1
    finally:
        await bus.js.delete_stream("BUSTEST_LATE")
        await bus.close()


async def test_a_publish_no_stream_ever_takes_fails_after_its_attempts(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, name="no-stream")
    try:
        started = time.monotonic()
        with pytest.raises(NoStreamResponseError):
            await bus.publish("bustest.nowhere", state_pb2.TenantRecord(tenant_id="lost"))
        waited = time.monotonic() - started
        assert bus_module.PUBLISH_RETRY_S * (2 ** (bus_module.PUBLISH_ATTEMPTS - 1) - 1) <= waited < 10
    finally:
        await bus.close()
