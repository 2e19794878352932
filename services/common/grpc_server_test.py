"""A service whose port is taken fails to start instead of sharing the port (gRPC's SO_REUSEPORT default)."""

from __future__ import annotations

import grpc
import pytest

from services.common.grpc_server import NO_PORT_SHARING
from services.common.launchers.process import free_port


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
