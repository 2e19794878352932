"""A full JetStream store: told apart from an outage, refused at once on the public API, waited out by workers.

Every stream and KV bucket has a byte budget (topology.max_bytes_of). One at its budget refuses a new message
(discard policy 'new'; only EVENTS drops its oldest instead): NATS answers 503, err_code 10077 "maximum bytes
exceeded". A server or account out of JetStream storage answers 10023 "insufficient resources", 10047 "insufficient
storage resources available" or 10027 "resource limits exceeded for account". Waiting does not make space, an
operator (or retention) does, so:
- the public API answers RESOURCE_EXHAUSTED naming the event store (services/common/grpc_server.py);
- a worker's job waits at the refused write and tries it again with backoff, while its process pulls no new job
  (services/common/workqueue.py): what the job did so far (a training run) is kept, not done again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from nats.js.errors import APIError
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)
T = TypeVar("T")

INSUFFICIENT_RESOURCES = 10023  # the server's JetStream store (max_file_store) is full
ACCOUNT_RESOURCES_EXCEEDED = 10027
STORAGE_RESOURCES_EXCEEDED = 10047  # no room to reserve (a stream's max_bytes), or the account's storage is full
STORE_FAILED = 10077  # "{err}": a stream at its own limit says "maximum bytes exceeded"
FULL_STORE_CODES = frozenset({INSUFFICIENT_RESOURCES, ACCOUNT_RESOURCES_EXCEEDED, STORAGE_RESOURCES_EXCEEDED})
AT_LIMIT = "maximum bytes exceeded"
# Between tries of a worker's write to a full store.
SPACE_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)

STORE_FULL = Counter("studio_nats_store_full_total", "Writes a NATS stream or KV bucket refused for want of space",
                     ["store"])
WAITING = Gauge("studio_nats_writes_waiting_for_space", "Workers' writes waiting for space in a full NATS store")

_waits_for_space: contextvars.ContextVar[bool] = contextvars.ContextVar("studio_waits_for_space", default=False)


def store_is_full(error: BaseException | None) -> bool:
    """Whether `error` (or what caused it) is JetStream refusing a write for want of space."""
    while error is not None:
        if isinstance(error, APIError) and _says_full(getattr(error, "err_code", None),
                                                      getattr(error, "description", None) or ""):
            return True
        error = error.__cause__
    return False


def _says_full(err_code: int | None, description: str) -> bool:
    """Some nats-py APIError subclasses (KeyWrongLastSequenceError) carry neither field."""
    return err_code in FULL_STORE_CODES or (err_code == STORE_FAILED and AT_LIMIT in description.lower())


@contextlib.contextmanager
def waiting_for_space() -> Iterator[None]:
    """Writes in this block (and in tasks it starts) wait for space in a full store instead of failing."""
    token = _waits_for_space.set(True)
    try:
        yield
    finally:
        _waits_for_space.reset(token)


class StoreSpace:
    """One process's writes to NATS (through its Bus): counts refusals; in a worker, waits them out."""

    def __init__(self) -> None:
        self._waiting = 0
        self._free = asyncio.Event()
        self._free.set()

    @property
    def full(self) -> bool:
        """A write of this process is waiting for space now."""
        return self._waiting > 0

    async def until_free(self) -> None:
        """Return once no write of this process waits for space (at once when none does)."""
        await self._free.wait()

    async def write(self, write: Callable[[], Awaitable[T]], store: str) -> T:
        """write(); refused for want of space, raised, or inside waiting_for_space() tried again until it fits."""
        try:
            return await write()
        except APIError as error:
            if not store_is_full(error):
                raise
            STORE_FULL.labels(store).inc()
            if not _waits_for_space.get():
                raise
            log.warning("NATS store %s is full (%s); this write waits for space", store, error)
        self._waiting += 1
        self._free.clear()
        WAITING.inc()
        try:
            return await self._until_stored(write, store)
        finally:
            self._waiting -= 1
            WAITING.dec()
            if not self._waiting:
                self._free.set()

    @staticmethod
    async def _until_stored(write: Callable[[], Awaitable[T]], store: str) -> T:
        tries = 0
        while True:
            await asyncio.sleep(SPACE_RETRY_S[min(tries, len(SPACE_RETRY_S) - 1)])
            tries += 1
            try:
                result = await write()
            except APIError as error:
                if not store_is_full(error):
                    raise
                STORE_FULL.labels(store).inc()
                continue
            log.info("NATS store %s took the write after %d tries", store, tries + 1)
            return result
