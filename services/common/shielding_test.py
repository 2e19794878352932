import asyncio
import gc

import pytest

from services.common.shielding import completed_even_if_cancelled

pytestmark = pytest.mark.asyncio


async def test_work_runs_to_its_end_after_the_caller_is_cancelled_and_collected() -> None:
    release, finished = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        await release.wait()
        finished.set()
        return "done"

    caller = asyncio.create_task(completed_even_if_cancelled(work()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    del caller
    gc.collect()  # the loop holds tasks weakly: the work must survive a collection
    release.set()
    await asyncio.wait_for(finished.wait(), 1)


async def test_the_caller_gets_the_work_result() -> None:
    async def work() -> int:
        return 7

    assert await completed_even_if_cancelled(work()) == 7
