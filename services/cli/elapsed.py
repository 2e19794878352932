"""A line on stderr that counts the seconds while a call of unknown length runs (`studio keys rotate`),
so a long wait does not look like a hang."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tqdm import tqdm

TICK_S = 1.0


@asynccontextmanager
async def counting_seconds(description: str, quiet: bool) -> AsyncIterator[None]:
    """'DESCRIPTION: 00:07' on stderr, redrawn every second until the block ends; nothing when QUIET (--json) or
    when stderr is no terminal, so a script reading stderr gets the error line alone."""
    hidden = quiet or not sys.stderr.isatty()
    with tqdm(desc=description, bar_format="{desc}: {elapsed}", file=sys.stderr, disable=hidden, leave=False) as bar:
        ticker = asyncio.create_task(_redraw_every_tick(bar))
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)


async def _redraw_every_tick(bar: tqdm) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        bar.refresh()
