"""The declared topology against a real nats-server: idempotent declaration, KV helpers, dedup, and the byte budget
of every stream and bucket (declared, updated on an old deployment, refusing new writes rather than dropping any)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from studio.v1 import state_pb2

from services.common import bus as bus_module
from services.common import topology
from services.common.bus import Bus
from services.common.launchers.binaries import find_binary
from services.common.launchers.nats import NatsServer, start_nats
from services.common.launchers.process import ManagedProcess, free_ports
from services.common.store_space import store_is_full
from services.common.topology import MIN_STORE_BYTES, STORE_BYTES_ENV, max_bytes_of

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


@pytest_asyncio.fixture(loop_scope="session")
async def own_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A nats-server of the test's own: its streams' limits change, which others must not see."""
    server = await start_nats(tmp_path / "data", tmp_path / "logs")
    try:
        yield server
    finally:
        server.stop()


async def limited_nats(root: Path, max_file_store: int) -> NatsServer:
    port, monitor_port = free_ports(2)
    config = root / "nats.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n"
                      f'jetstream {{\n  store_dir: "{root / "data"}"\n  max_file_store: {max_file_store}\n}}\n')
    process = ManagedProcess(f"nats-{port}", [find_binary("nats-server"), "-c", str(config)], root / "logs")
    process.start()
    server = NatsServer(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor_port}", process)
    await process.wait_ready(server.ready, 30)
    return server


def every_store() -> list[tuple[str, str]]:
    """(stream name, share name) of every stream and KV bucket."""
    return [(s.name, s.name) for s in topology.STREAMS] + [(f"KV_{b}", b) for b in topology.BUCKETS]


async def test_every_stream_and_bucket_has_a_share_and_together_they_fit_the_budget() -> None:
    assert set(topology.STORE_SHARES) == {share for _, share in every_store()}
    for budget in (MIN_STORE_BYTES, topology.DEFAULT_STORE_BYTES, 16 * 2**30):
        assert sum(max_bytes_of(share, budget) for _, share in every_store()) <= budget


async def assert_budgets(bus: Bus, budget: int) -> None:
    for stream, share in every_store():
        config = (await bus.js.stream_info(stream)).config
        assert config.max_bytes == max_bytes_of(share, budget), stream
        # Only the order events drop their oldest; everything else refuses a write rather than lose a record.
        assert config.discard == (DiscardPolicy.OLD if stream == "EVENTS" else DiscardPolicy.NEW), stream
    assert (await bus.js.stream_info("EVENTS")).config.max_age == 30 * 24 * 3600


async def test_declare_gives_an_old_deployment_its_budgets_and_keeps_what_it_holds(
    own_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await nats.connect(own_nats.url)
    js = client.jetstream()
    for config in topology.STREAMS:  # as declared before the budgets: no max_bytes, the server's discard (old)
        await js.add_stream(dataclasses.replace(config, discard=None))
    for bucket in topology.BUCKETS:
        await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE))
    await (await js.key_value(topology.SUBJECTS_BUCKET)).put("subj_1", b"a customer's record")
    await js.publish(topology.deletion_requested_subject("del_1"), b"a deletion request")
    before = {stream: (await js.stream_info(stream)).config for stream, _ in every_store()}
    await client.close()
    monkeypatch.setenv(STORE_BYTES_ENV, str(64 * 2**20))
    bus = await Bus.connect(own_nats.url, name="upgrade")
    try:
        await assert_budgets(bus, 64 * 2**20)
        for stream, old in before.items():  # only the limits changed (and the write leases' age: they expire)
            new = (await bus.js.stream_info(stream)).config
            assert dataclasses.replace(new, max_bytes=old.max_bytes, discard=old.discard, max_age=old.max_age) == old
            assert new.max_age == old.max_age or stream == f"KV_{topology.WRITE_LEASES_BUCKET}", stream
        monkeypatch.setenv(STORE_BYTES_ENV, str(32 * 2**20))  # the operator changes the budget
        await bus.declare()
        await assert_budgets(bus, 32 * 2**20)
        assert await bus.kv_raw(topology.SUBJECTS_BUCKET, "subj_1") == b"a customer's record"
        assert (await bus.js.stream_info(topology.DELETIONS_STREAM.name)).state.messages == 1
    finally:
        await bus.close()


async def test_a_bucket_or_stream_at_its_budget_refuses_new_writes_and_drops_nothing(
    own_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_BYTES_ENV, str(MIN_STORE_BYTES))
    bus = await Bus.connect(own_nats.url, name="budget")
    record = state_pb2.TenantRecord(tenant_id="t", name="x" * 500)
    limit = max_bytes_of(topology.TENANTS_BUCKET, MIN_STORE_BYTES)
    try:
        stored = 0
        with pytest.raises(ServiceUnavailableError) as refused:
            for number in range(2 * limit // len(record.SerializeToString())):
                await bus.kv_put(topology.TENANTS_BUCKET, f"key{number}", record)
                stored += 1
        assert store_is_full(refused.value), refused.value
        assert len(await bus.kv_keys(topology.TENANTS_BUCKET)) == stored  # no record dropped to make room
        assert await bus.kv_get(topology.TENANTS_BUCKET, "key0", state_pb2.TenantRecord) == record
        await bus.kv_put(topology.TENANTS_BUCKET, "key0", record)  # a record rewritten in place still fits
        await assert_stream_refuses(bus, topology.DELETIONS_STREAM.name, topology.deletion_requested_subject)
        await assert_events_drop_their_oldest(bus)
    finally:
        await bus.close()


async def assert_stream_refuses(bus: Bus, stream: str, subject_for) -> None:
    limit = max_bytes_of(stream, MIN_STORE_BYTES)
    stored = 0
    with pytest.raises(ServiceUnavailableError) as refused:
        for number in range(2 * limit // 500):
            await bus.publish_raw(subject_for(f"d{number}"), b"r" * 500)
            stored += 1
    assert store_is_full(refused.value), refused.value
    info = await bus.js.stream_info(stream)
    assert info.state.messages == stored and info.state.first_seq == 1  # every deletion request kept


async def assert_events_drop_their_oldest(bus: Bus) -> None:
    limit = max_bytes_of(topology.EVENTS_STREAM.name, MIN_STORE_BYTES)
    for number in range(2 * limit // 500):
        await bus.publish_raw(topology.order_events_subject(f"o{number}"), b"e" * 500)
    info = await bus.js.stream_info(topology.EVENTS_STREAM.name)
    assert info.state.bytes <= limit and info.state.first_seq > 1


async def test_a_budget_the_server_cannot_reserve_stops_the_service_saying_what_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await limited_nats(tmp_path, max_file_store=4 * 2**20)
    monkeypatch.setenv(STORE_BYTES_ENV, str(16 * 2**20))
    try:
        with pytest.raises(RuntimeError, match=f"lower {STORE_BYTES_ENV}"):
            await Bus.connect(server.url, name="too-big")
        monkeypatch.setenv(STORE_BYTES_ENV, str(2 * 2**20))
        await (await Bus.connect(server.url, name="fits")).close()
    finally:
        server.stop()
