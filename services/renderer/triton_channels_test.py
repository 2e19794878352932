"""One channel per Triton address and event loop; a channel through which Triton was unreachable is dropped.

Each test runs on an event loop of its own (asyncio.run): the suite's shared loop keeps its channels to the
servers other tests started."""

from __future__ import annotations

import asyncio

import pytest

from services.common.launchers.process import free_port
from services.renderer.triton_channels import close_clients, triton_client
from services.renderer.triton_client import TritonUnavailable, max_batch_size, triton_ready


def unreachable_url() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_calls_to_one_address_share_a_channel_and_others_get_their_own() -> None:
    async def scenario() -> None:
        first, second = unreachable_url(), unreachable_url()
        assert triton_client(first) is triton_client(first)
        assert triton_client(second) is not triton_client(first)
        closed = triton_client(first)
        await close_clients()
        assert triton_client(first) is not closed  # closing forgets them
        await close_clients()

    asyncio.run(scenario())


def test_a_channel_that_found_triton_unreachable_is_replaced() -> None:
    async def scenario() -> None:
        url = unreachable_url()
        before = triton_client(url)
        assert not await triton_ready(url)
        after = triton_client(url)
        assert after is not before
        with pytest.raises(TritonUnavailable, match=url):
            await max_batch_size(url)
        assert triton_client(url) is not after
        await close_clients()

    asyncio.run(scenario())


def test_a_finished_event_loops_channel_is_not_reused() -> None:
    url = unreachable_url()

    async def client():
        return triton_client(url)

    first = asyncio.run(client())
    assert asyncio.run(client()) is not first  # a channel is bound to the loop that made it


def test_a_worker_keeps_the_fallback_in_flight_while_triton_cannot_say_its_batch_size() -> None:
    from services.common.workqueue import WorkerState
    from services.renderer.ranking import FALLBACK_CONCURRENCY, RankingSettings
    from services.renderer.worker import RenderWorker

    async def scenario() -> None:
        url = unreachable_url()
        worker = RenderWorker(bus=None, sealed=None, triton_url=url, state=WorkerState(),
                              provenance=None)  # in_flight asks Triton alone
        assert await worker.in_flight() == FALLBACK_CONCURRENCY
        assert worker._derived_in_flight == 0  # asked again for the next job
        chosen = RenderWorker(bus=None, sealed=None, triton_url=url, state=WorkerState(), provenance=None,
                              ranking=RankingSettings(concurrency=3))
        assert await chosen.in_flight() == 3
        await close_clients()

    asyncio.run(scenario())
