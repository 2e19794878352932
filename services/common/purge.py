"""The purge side of deletion, shared by every service that holds subject data.

Each service consumes DeletionRequested from its own durable consumer (so it catches up after
downtime), stops sealing and announcing anything for the subject, lets writes under way finish,
destroys what it holds, and confirms to the vault with counts of what it destroyed.

A service may run as several replicas, and the durable consumer hands each deletion to one of them. So
every replica also reads every deletion request (ordered consumer) and stops the subject's work at once,
and the purging replica waits, before it destroys anything, for the writes under way on any replica
(WriteLeases) and until any data key a replica still caches has expired: a write it did not see
cannot land after the purge."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from studio.v1 import events_pb2

from services.common import topology
from services.common.bus import Bus, in_progress_while
from services.common.vault_client import SealedStore

log = logging.getLogger(__name__)

RETRY_DELAY_S = 5.0
# A key fetched just before the shred is used for at most the cache's lifetime after it; this covers the
# time between the vault's requested_at and its shred, and clock differences between machines.
KEY_EXPIRY_MARGIN_S = 2.0
LEASE_WAIT_S = 60.0  # then the deletion is retried (nak): writes that renew their leases are still under way
PurgeHandler = Callable[[events_pb2.DeletionRequested], Awaitable[dict[str, int]]]


class PurgeListener:
    """A service's deletion consumer. `caught_up` is set once this replica has stopped every subject whose
    deletion was requested before it started (the ordered consumer's replay): work queues start only then, so a
    restarted worker never picks up a deleted subject's job and announces it again. `on_stop` runs on every
    replica for every deletion (e.g. forgetting what the process keeps of the subject in memory)."""

    def __init__(self, bus: Bus, service: str, sealed: SealedStore, purge: PurgeHandler,
                 on_stop: Callable[[str], object] = lambda subject_id: None) -> None:
        self.bus, self.service, self.sealed, self.purge, self.on_stop = bus, service, sealed, purge, on_stop
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        watch = await self.bus.js.subscribe(topology.DELETION_REQUESTS, stream=topology.DELETIONS_STREAM.name,
                                            cb=self._stop_subject, ordered_consumer=True)
        # Not "until the durable consumer's backlog is empty": another replica may hold its last message for
        # the whole purge, and this one would never start its workers.
        if not (await self.bus.js.stream_info(topology.DELETIONS_STREAM.name)).state.messages:
            self.caught_up.set()  # nothing to replay
        durable = topology.purge_consumer(self.service).durable_name
        consumer = await self.bus.js.consumer_info(topology.DELETIONS_STREAM.name, durable)
        handle = functools.partial(self._handle, beat_every_s=consumer.config.ack_wait / 3)
        try:  # one at a time: a purge waits seconds (cached keys, leases), and fetched messages would age meanwhile
            await self.bus.consume(topology.DELETIONS_STREAM.name, durable, handle, batch=1)
        finally:
            await watch.unsubscribe()

    async def _stop_subject(self, message: Msg) -> None:
        """Any replica, any deletion: nothing more of the subject is read, sealed or announced here."""
        subject_id = events_pb2.DeletionRequested.FromString(message.data).subject_id
        stop_subject(self.sealed, subject_id)
        self.on_stop(subject_id)
        if message.metadata.num_pending == 0:
            self.caught_up.set()

    def then(self, task: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """`task`, started once this replica has stopped every deleted subject (a background-task factory for
        serve())."""
        async def gated() -> None:
            await self.caught_up.wait()
            await task()

        return gated

    async def _handle(self, message: Msg, beat_every_s: float) -> None:
        request = events_pb2.DeletionRequested.FromString(message.data)
        try:
            async with in_progress_while(message, beat_every_s):  # longer than ack_wait, not delivered again
                destroyed = await forget_and_purge(request, self.sealed, self.purge)
                await confirm(self.bus, self.service, request.deletion_id, destroyed)
        except Exception:
            log.exception("purge for deletion %s failed; retrying", request.deletion_id)
            await message.nak(delay=RETRY_DELAY_S)
            return
        await message.ack()


async def forget_and_purge(
    request: events_pb2.DeletionRequested, sealed: SealedStore, purge: PurgeHandler
) -> dict[str, int]:
    stop_subject(sealed, request.subject_id)
    await sealed.guard.wait_for_writes(request.subject_id)
    if sealed.leases is not None:  # other replicas may write too
        await outlast_cached_keys(request, sealed.vault.key_ttl_s)
        await sealed.leases.wait_until_none(request.subject_id, LEASE_WAIT_S)
    return await purge(request)


def stop_subject(sealed: SealedStore, subject_id: str) -> None:
    """Nothing more of the subject is read, sealed or announced by this process; its cached keys are gone."""
    sealed.guard.mark_deleted(subject_id)
    sealed.vault.forget_subject(subject_id)


async def outlast_cached_keys(request: events_pb2.DeletionRequested, key_ttl_s: float) -> None:
    """Wait until no replica can still hold the subject's data key: from then on a write whose lease came too late
    to be seen asks the vault for the shredded key, and is refused."""
    expired_at = request.requested_at.ToNanoseconds() / 1e9 + key_ttl_s + KEY_EXPIRY_MARGIN_S
    await asyncio.sleep(max(0.0, expired_at - time.time()))


async def confirm(bus: Bus, service: str, deletion_id: str, destroyed: dict[str, int]) -> None:
    confirmation = events_pb2.DeletionConfirmed(deletion_id=deletion_id, service=service, destroyed=destroyed)
    confirmation.confirmed_at.GetCurrentTime()
    await bus.publish(
        topology.deletion_confirmed_subject(deletion_id, service), confirmation, msg_id=f"{deletion_id}:{service}"
    )
    log.info("purged deletion %s: %s", deletion_id, destroyed)
