"""Work a caller's cancellation must not cut short (an order half-written, photos checked but not recorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# The event loop holds only weak references to tasks: one whose awaiting caller was cancelled is kept here until
# it ends, or it could be collected mid-way.
_UNFINISHED: set[asyncio.Task] = set()


async def completed_even_if_cancelled(work: Coroutine[Any, Any, T]) -> T:
    """Await WORK; a cancelled caller stops waiting for it, but WORK still runs to its end."""
    task = asyncio.ensure_future(work)
    _UNFINISHED.add(task)
    task.add_done_callback(_UNFINISHED.discard)
    return await asyncio.shield(task)
