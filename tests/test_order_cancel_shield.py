"""CreateOrder shields the order's record and its job from a caller that hangs up: once the order is listed on
its subject, the call's cancellation no longer stops the index entry, the record and the held job from being
written, so no order is left stored but never queued, or indexed without its record.

The cancellation lands inside the shielded section by construction: a second ingest process reaches NATS through
a proxy that holds what it sends from the first write of the order's index entry (the shielded section's first
step) until the test lets it through; the test cancels the call while the write is held and waits until ingest's
handler has ended (its RPC timing metric counts it) before letting it through."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
import pytest
import pytest_asyncio
from studio.v1 import common_pb2, studio_pb2

from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common import topology
from services.common.bus import Bus
from services.common.config import url_with_token
from services.common.launchers.process import ManagedProcess, free_ports
from services.ingest.jobs import order_has_job
from studio_client import NO_RETRIES, StudioClient
from tests.fixtures_tenants import (  # noqa: F401  (fixtures)
    HEADSHOT,
    STYLE,
    Tenants,
    admin,
    lisa_headshot,
    tenants,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = TypeVar("T")


class HoldingProxy:
    """A TCP proxy that, once armed with a pattern, holds everything a client sends from the first chunk naming
    it until released: the client's request waits, as on a NATS server that is slow to take it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.holding = asyncio.Event()
        self._released = asyncio.Event()
        self._pattern = b""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def hold_from(self, pattern: bytes) -> None:
        self._pattern = pattern
        self.holding.clear()
        self._released.clear()

    def release(self) -> None:
        self._pattern = b""
        self._released.set()

    async def close(self) -> None:
        self.release()
        if self._server:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._connections:  # each ends with its sockets, not cancelled at the loop's end
            await asyncio.wait(self._connections, timeout=5)

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._connections.add(asyncio.current_task())
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(self._pump(client_reader, server_writer, holds=True),
                             self._pump(server_reader, client_writer, holds=False), return_exceptions=True)
        self._writers.difference_update((client_writer, server_writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, holds: bool) -> None:
        tail = b""
        try:
            while data := await reader.read(65536):
                if holds and self._pattern and self._pattern in tail + data:
                    self.holding.set()
                    await self._released.wait()
                tail = data[-256:]
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@dataclass
class Replica:
    endpoint: str
    metrics_url: str
    nats: HoldingProxy


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replica(stack: EmbeddedStack) -> AsyncIterator[Replica]:
    """A second ingest process on the stack's store, reaching the stack's NATS through a HoldingProxy."""
    assert stack.nats
    host, port = stack.nats.address.removeprefix("nats://").rsplit(":", 1)
    proxy = HoldingProxy(host, int(port))
    nats_url = url_with_token(await proxy.start(), stack.nats.token)
    listen, metrics = free_ports(2, exclude={stack.public_port})
    env = stack._service_env("ingest", stack._base_model(lambda message: None), f"127.0.0.1:{listen}")
    env.update(STUDIO_NATS_URL=nats_url, STUDIO_METRICS_PORT=str(metrics))
    process = ManagedProcess("ingest-nats-held", [sys.executable, "-m", "services.ingest"], stack.paths.logs,
                             env=env, cwd=REPO_ROOT)
    process.start()
    try:
        await process.wait_ready(lambda: grpc_healthy(f"127.0.0.1:{listen}"), timeout=120)
        yield Replica(f"127.0.0.1:{listen}", f"http://127.0.0.1:{metrics}/metrics", proxy)
    finally:
        process.stop()
        await proxy.close()


async def eventually(probe: Callable[[], Awaitable[T]], what: str, timeout_s: float = 20) -> T:
    """probe()'s first truthy answer within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (answer := await probe()):
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)
    return answer


async def create_orders_ended(replica: Replica) -> int:
    """How many CreateOrder calls the replica's handler has finished, however they ended (cancelled too)."""
    def scrape() -> str:
        with urllib.request.urlopen(replica.metrics_url, timeout=5) as response:
            return response.read().decode()

    lines = (await asyncio.to_thread(scrape)).splitlines()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines
               if line.startswith("studio_rpc_seconds_count{") and "CreateOrder" in line)


async def cancelled_inside_the_shield(replica: Replica, client: StudioClient, tenant_id: str,
                                      request: studio_pb2.CreateOrderRequest) -> None:
    """Call CreateOrder on the replica, cancel the call while the order's index entry waits on NATS (inside the
    shield), and let NATS take it only once the handler has ended."""
    ended = await create_orders_ended(replica)
    replica.nats.hold_from(f"$KV.{topology.TENANT_INDEX_BUCKET}.{tenant_id}.o.".encode())
    try:
        call = client.stub.CreateOrder(request, metadata=client.metadata, timeout=60)
        await asyncio.wait_for(replica.nats.holding.wait(), 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await call.code() == grpc.StatusCode.CANCELLED
        await eventually(lambda: _more(create_orders_ended(replica), ended), "the cancelled handler ended")
    finally:
        replica.nats.release()


async def _more(count: Awaitable[int], than: int) -> bool:
    return await count > than


async def queued_or_under_way(bus: Bus, client: StudioClient, order_id: str) -> bool:
    """Its job is held or in a work queue, or a worker has taken it further."""
    if await order_has_job(bus, order_id):
        return True
    return (await client.get_order(order_id)).state != common_pb2.ORDER_STATE_QUEUED


async def test_an_order_whose_caller_hangs_up_inside_the_shield_is_complete_and_kept_by_its_retry(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica  # noqa: F811
) -> None:
    tenant_id, direct = await tenants.new()
    client = tenants.client(direct.metadata[0][1], replica.endpoint, retry=NO_RETRIES)
    subject_id = (await direct.create_subject(external_ref="hangs-up")).subject_id
    await direct.upload(subject_id, [(lisa_headshot(), HEADSHOT)])
    request = studio_pb2.CreateOrderRequest(subject_id=subject_id, styles=STYLE, count=1, idempotency_key="hang-up")
    await cancelled_inside_the_shield(replica, client, tenant_id, request)

    async def listed() -> list[common_pb2.Order]:
        return list((await direct.list_orders(subject_id=subject_id)).orders)

    [order] = await eventually(listed, "the order is listed (indexed, with its record)")
    assert order.state != common_pb2.ORDER_STATE_FAILED and order.subject_id == subject_id  # queued, or further
    assert (await direct.get_order(order.order_id)).order_id == order.order_id
    bus = await Bus.connect(stack.nats.url, name="test-order-cancel-shield")
    try:
        await eventually(lambda: queued_or_under_way(bus, direct, order.order_id), "the order's job is queued")
    finally:
        await bus.close()
    try:
        again = (await direct.stub.CreateOrder(request, metadata=direct.metadata, timeout=30)).order  # the same request
        assert again.order_id == order.order_id  # the retry gets the order, not a second one
        assert [o.order_id for o in await listed()] == [order.order_id]
    finally:
        await direct.cancel_order(order.order_id)
