"""Session-wide real servers for tests: nats-server with JetStream and SeaweedFS's S3 gateway.

Registered for every test by the top-level conftest.py; request `nats_server`, `bus` (a connection to
it with the topology declared) or `seaweed_s3`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.common.bus import Bus
from services.common.launchers.nats import NatsServer, start_nats
from services.common.launchers.seaweed import SeaweedS3, start_seaweed_s3

# Test data is thrown away, so there is no point waiting out weed's 15 s graceful filer stop.
SEAWEED_TEST_STOP_TIMEOUT = 2.0


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    base = tmp_path_factory.mktemp("nats")
    # Authenticated as the embedded stack's is: every client must reach it through its url, token and all.
    server = await start_nats(base / "data", base / "logs", token_file=base / "secrets" / "nats.token")
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_server.url, name="test")
    await bus.declare()
    try:
        yield bus
    finally:
        await bus.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SeaweedS3]:
    base = tmp_path_factory.mktemp("seaweed")
    server = await start_seaweed_s3(base / "data", base / "logs")
    try:
        yield server
    finally:
        server.stop(timeout=SEAWEED_TEST_STOP_TIMEOUT)
