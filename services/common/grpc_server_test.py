"""A service whose port is taken fails to start instead of sharing the port (gRPC's SO_REUSEPORT default). The
interceptor every service runs behind: calls to unknown methods add no metric series; a full NATS store is
RESOURCE_EXHAUSTED naming the studio's event store (which studio_client does not retry); NATS down is UNAVAILABLE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from studio.v1 import state_pb2

from services.common.bus import Bus
from services.common.grpc_server import (
    NO_PORT_SHARING,
    RPC_COUNT,
    STORE_FULL_DETAILS,
    UNKNOWN_METHOD,
    ServiceInterceptor,
)
from services.common.launchers.nats import NatsServer, start_nats
from services.common.launchers.process import free_port
from services.common.topology import MIN_STORE_BYTES, STORE_BYTES_ENV, TENANTS_BUCKET, max_bytes_of
from studio_client.retry import RetryPolicy, with_retries


async def _bound_server(address: str, options: list) -> grpc.aio.Server:
    server = grpc.aio.server(options=options)
    server.add_insecure_port(address)
    await server.start()
    return server


async def test_by_default_grpc_lets_two_servers_share_a_port() -> None:
    address = f"127.0.0.1:{free_port()}"
    servers = [await _bound_server(address, []), await _bound_server(address, [])]  # silently, calls go to either
    for server in servers:
        await server.stop(grace=None)


async def test_a_second_server_on_a_taken_port_fails_to_bind() -> None:
    address = f"127.0.0.1:{free_port()}"
    first = await _bound_server(address, NO_PORT_SHARING)
    try:
        with pytest.raises(RuntimeError, match="Failed to bind"):
            await _bound_server(address, NO_PORT_SHARING)
    finally:
        await first.stop(grace=None)


CRASHING_SERVICE = """
import asyncio, sys
from services.common.grpc_server import serve

async def broken_worker():
    raise RuntimeError("a bug in the worker")

asyncio.run(serve("crashing", sys.argv[1], 0, lambda server: [], background=[broken_worker]))
"""


def test_a_service_whose_background_worker_crashes_exits_with_status_1() -> None:
    """Kubernetes and `studio up` restart it either way; the status tells an operator it crashed."""
    import subprocess
    import sys

    from services.cli.stack import REPO_ROOT

    ended = subprocess.run([sys.executable, "-c", CRASHING_SERVICE, f"127.0.0.1:{free_port()}"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60)
    assert ended.returncode == 1, ended.stderr[-2000:]
    assert "background task failed; stopping the service" in ended.stderr


async def intercepted_server(service: str, *handlers: grpc.GenericRpcHandler) -> tuple[grpc.aio.Server, str]:
    """A real grpc.aio server with the services' interceptor, as serve() builds it."""
    server = grpc.aio.server(interceptors=[ServiceInterceptor(service)], options=NO_PORT_SHARING)
    server.add_generic_rpc_handlers(handlers)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    return server, address


def series_of(service: str) -> dict[str, float]:
    """studio_rpc_total's series of `service`: method label to count."""
    return {sample.labels["method"]: sample.value for metric in RPC_COUNT.collect() for sample in metric.samples
            if sample.name == "studio_rpc_total" and sample.labels["service"] == service}


async def test_calls_to_methods_no_service_has_add_no_series() -> None:
    """Anyone reaching the public port can name any method: the names must not each become a Prometheus series."""
    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    echo = grpc.method_handlers_generic_handler("test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
    server, address = await intercepted_server("series-test", echo)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            for number in range(50):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channel.unary_unary(f"/test.Echo/Random{number}")(b"", timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary(f"/random.Service{number}/Call")(b"", timeout=5)
            assert await channel.unary_unary("/test.Echo/Say")(b"hi", timeout=5) == b"hi"
    finally:
        await server.stop(grace=None)
    assert series_of("series-test") == {UNKNOWN_METHOD: 100, "/test.Echo/Say": 1}


@pytest_asyncio.fixture(loop_scope="session")
async def budgeted_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bus]:
    """The topology declared on a nats-server of the test's own with the smallest budget (1 MiB in all)."""
    monkeypatch.setenv(STORE_BYTES_ENV, str(MIN_STORE_BYTES))
    server = await start_nats(tmp_path / "data", tmp_path / "logs")
    bus = await Bus.connect(server.url, name="api-test")
    try:
        yield bus
    finally:
        await bus.close()
        server.stop()


def storing_service(bus: Bus) -> grpc.GenericRpcHandler:
    """test.Store/Put: a new record per call, in a bucket with its share of the budget (as CreateSubject stores)."""
    async def put(key: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await bus.kv_put(TENANTS_BUCKET, key.decode(), state_pb2.TenantRecord(tenant_id="t", name="x" * 500))
        return b""

    return grpc.method_handlers_generic_handler("test.Store", {"Put": grpc.unary_unary_rpc_method_handler(put)})


async def test_a_full_event_store_is_resource_exhausted_naming_it_and_the_client_does_not_retry(
    budgeted_bus: Bus,
) -> None:
    server, address = await intercepted_server("store-test", storing_service(budgeted_bus))
    attempts: list[str] = []
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            put = channel.unary_unary("/test.Store/Put")

            async def attempt(key: str, left: float) -> bytes:
                attempts.append(key)
                return await put(key.encode(), timeout=left)

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                for number in range(2 * max_bytes_of(TENANTS_BUCKET, MIN_STORE_BYTES) // 500):
                    await with_retries(RetryPolicy(initial_backoff_s=0.01), 10, partial(attempt, f"key{number}"))
    finally:
        await server.stop(grace=None)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    assert refused.value.details() == STORE_FULL_DETAILS and "event store is full" in STORE_FULL_DETAILS
    assert len(attempts) == len(set(attempts))  # the refused call was made once: studio_client does not retry it


async def test_nats_down_during_a_call_is_unavailable(nats_server: NatsServer) -> None:
    """A NATS restart under a call (a closed or reconnecting connection) is worth a retry, not INTERNAL."""
    bus = await Bus.connect(nats_server.url, name="api-outage")
    await bus.client.close()
    server, address = await intercepted_server("outage-test", storing_service(bus))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/test.Store/Put")(b"key", timeout=5)
    finally:
        await server.stop(grace=None)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
