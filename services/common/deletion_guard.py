"""Per-process memory of subjects being deleted: once a deletion reaches a service, nothing more of
that subject is sealed, stored or announced by it, and its purge waits for writes already under way.

In memory only: after a restart the subject's data key is gone from the vault, so nothing can be
sealed for it anyway."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

REMEMBER_S = 3600.0


class SubjectDeleted(Exception):
    """The subject is being deleted; the operation must not leave anything behind."""

    def __init__(self, subject_id: str) -> None:
        super().__init__(f"subject {subject_id} is being deleted")
        self.subject_id = subject_id


class DeletionGuard:
    def __init__(self) -> None:
        self._deleted: dict[str, float] = {}
        self._writes: Counter[str] = Counter()
        self._idle = asyncio.Condition()

    def is_deleted(self, subject_id: str) -> bool:
        return subject_id in self._deleted

    def check(self, subject_id: str) -> None:
        if subject_id in self._deleted:
            raise SubjectDeleted(subject_id)

    def mark_deleted(self, subject_id: str) -> None:
        now = time.monotonic()
        self._deleted = {sid: at for sid, at in self._deleted.items() if now - at < REMEMBER_S}
        self._deleted[subject_id] = now

    @contextlib.asynccontextmanager
    async def writing(self, subject_id: str) -> AsyncIterator[None]:
        """`async with guard.writing(subject):` around a write, so a purge can wait for it to end."""
        self.check(subject_id)
        self._writes[subject_id] += 1
        try:
            yield
        finally:
            await self._end_write(subject_id)

    async def wait_for_writes(self, subject_id: str, timeout_s: float = 60.0) -> None:
        async with self._idle:
            await asyncio.wait_for(self._idle.wait_for(lambda: self._writes[subject_id] == 0), timeout_s)

    async def _end_write(self, subject_id: str) -> None:
        async with self._idle:
            self._writes[subject_id] -= 1
            if self._writes[subject_id] <= 0:
                del self._writes[subject_id]
            self._idle.notify_all()

