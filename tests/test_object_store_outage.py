"""The S3 object store goes away and comes back (a real SeaweedFS behind a TCP proxy that stops listening, so the
services see connections refused): an upload meanwhile answers UNAVAILABLE and keeps nothing; an order whose
training, then whose rendering, meets the outage waits for the store and is delivered, it does not fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from services.cli.stack import EmbeddedStack
from services.common.launchers.process import free_port
from services.common.launchers.seaweed import SeaweedS3
from studio_client import NO_RETRIES, StudioClient
from tests.fixtures_stack import faces
from tests.tcp_proxy import CuttingProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

OUTAGE_S = 2.0
HEADSHOT = 1


@dataclass
class World:
    store: CuttingProxy  # the services' only way to the S3 server
    stack: EmbeddedStack
    client: StudioClient


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory, seaweed_s3: SeaweedS3) -> AsyncIterator[World]:
    """The session's S3 server behind a proxy of this module's own: the outage cuts the proxy, not the server."""
    base, s3 = tmp_path_factory.mktemp("outage"), seaweed_s3
    host, port = s3.endpoint.rsplit(":", 1)
    proxy = CuttingProxy(host, int(port))
    await proxy.start()
    blob_url = s3.url.replace(s3.endpoint, proxy.endpoint)
    stack = EmbeddedStack(data_dir=base / "data", public_port=free_port(), blob_url=f"{blob_url}/outage",
                          min_accepted_photos=1)
    try:
        await stack.start()
        client = StudioClient(stack.public_endpoint, stack.paths.api_key_file.read_text().strip(), retry=NO_RETRIES)
        try:
            yield World(proxy, stack, client)
        finally:
            await client.close()
    finally:
        stack.stop()
        await proxy.close()


async def _bring_back(store: CuttingProxy, after_s: float) -> None:
    await asyncio.sleep(after_s)
    await store.come_up()


async def test_an_outage_refuses_uploads_and_holds_orders_until_the_store_is_back(world: World) -> None:
    subject = await world.client.create_subject()
    await world.client.upload(subject.subject_id, [(faces("lisa")[0], HEADSHOT)])
    await world.store.go_down()
    other = await world.client.create_subject()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await world.client.upload(other.subject_id, [(faces("lisa")[1], HEADSHOT)])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "retry" in (refused.value.details() or "")
    assert not (await world.client.get_subject(other.subject_id)).photos  # nothing kept

    # The training job reads the subject's crops from the store first; at "trained" the render job's LoRA read
    # meets a second outage.
    returning = asyncio.create_task(_bring_back(world.store, OUTAGE_S))
    order = await world.client.create_order(subject.subject_id, ["studio-frontal-soft"], 1)
    kinds: list[str] = []
    async for response in world.client.watch(order.order_id, timeout_s=600):
        kinds.append(response.event.WhichOneof("kind"))
        if kinds[-1] == "trained":
            await returning
            await world.store.go_down()
            returning = asyncio.create_task(_bring_back(world.store, OUTAGE_S))
        if kinds[-1] in ("done", "failed"):
            break
    await returning
    assert kinds[-1] == "done" and "failed" not in kinds, (response.event, kinds)
    assert len((await world.client.get_order(order.order_id)).portraits) == 1
    for service in ("trainer", "renderer"):  # each met the outage and waited
        assert "a dependency is unavailable" in (world.stack.paths.logs / f"{service}.log").read_text(), service
    [photo] = await world.client.upload(other.subject_id, [(faces("lisa")[1], HEADSHOT)])
    assert photo.verdict.accepted
