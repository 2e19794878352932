"""The services' NATS client: declares the topology (services/common/topology.py) on start, publishes, pulls
and keeps the KV buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import nats
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    NoKeysError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue
from prometheus_client import Gauge

from services.common.config import NATS_USER_ENV
from services.common.deletion_guard import DeletionGuard
from services.common.store_space import STORAGE_RESOURCES_EXCEEDED, StoreSpace
from services.common.topology import (
    BUCKET_TTLS,
    BUCKETS,
    DELETIONS_STREAM,
    PENDING_STREAM,
    PURGING_SERVICES,
    REPLICAS_ENV,
    STORE_BYTES_ENV,
    STREAMS,
    VAULT_CONFIRMATIONS_CONSUMER,
    VAULT_SERVICE,
    WORK_QUEUES,
    WorkQueue,
    backlog_consumer,
    max_bytes_of,
    purge_consumer,
    store_budget,
    store_of,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
T = TypeVar("T")

KV_LIST_ATTEMPTS = 3
# A publish no stream answered is tried again after 0.1, 0.2, 0.4 and 0.8 s.
PUBLISH_ATTEMPTS = 5
PUBLISH_RETRY_S = 0.1
# A JetStream cluster that is still electing its meta leader drops or refuses API requests for a few seconds.
DECLARE_ATTEMPTS = 5
DECLARE_RETRY_S = 1.0
# The server's answer to creating a stream (or bucket) that exists with another configuration.
CONFIG_DIFFERS = 10058
# A cluster's answer to a stream whose max_bytes no server has room to reserve: "no suitable peers for placement,
# insufficient storage" (one server answers STORAGE_RESOURCES_EXCEEDED).
NO_PEERS = 10005
# Changed on a stream that exists: its budget, what it does at its budget, how long it keeps messages.
LIMIT_FIELDS = ("max_bytes", "discard", "max_age")
# NATS restarting (a rolling restart), reconnecting or electing a stream leader: requests time out, find no
# responder or are refused for now.
NATS_OUTAGES = (
    nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError, nats.errors.NoServersError, nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError, ServiceUnavailableError, NoStreamResponseError,
)
STREAM_BUDGET = Gauge("studio_nats_stream_max_bytes", "The byte budget each NATS stream (KV_<bucket> for a bucket) "
                      "was declared with", ["stream_name"])


async def _repeat(interval_s: float, action: Callable[[], Awaitable[object]], lost: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await action()
        except Exception as error:  # NATS reconnecting: the next beat may still come in time
            log.warning("%s: %s", lost, error)


@contextlib.asynccontextmanager
async def beating(interval_s: float, action: Callable[[], Awaitable[object]], lost: str) -> AsyncIterator[None]:
    """`action` every `interval_s` while the block runs; a beat that fails is logged (`lost`) and the next one tried."""
    beats = asyncio.create_task(_repeat(interval_s, action, lost))
    try:
        yield
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats


def in_progress_while(message: Msg, interval_s: float) -> contextlib.AbstractAsyncContextManager[None]:
    """Tell the server every `interval_s` that `message` is still being worked on, so it is not delivered again."""
    return beating(interval_s, message.in_progress, "in-progress heartbeat lost")


async def fetch_or_stop(subscription: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """Up to `batch` messages (none when the fetch times out). CancelledError when the task was asked to stop,
    even where Python 3.11's wait_for (inside nats-py's fetch) dropped that cancellation as a reply arrived: the
    task still counts it. Messages fetched then go back to the stream (nak) for another consumer."""
    try:
        messages = await subscription.fetch(batch, timeout=5)
    except TimeoutError:
        messages = []
    if asyncio.current_task().cancelling():
        for message in messages:
            await message.nak()
        raise asyncio.CancelledError
    return messages


async def _attempts(call: Callable[[], Awaitable[T]], attempts: int,
                    retry_on: type[BaseException] | tuple[type[BaseException], ...],
                    pause_s: Callable[[int], float]) -> T:
    """call(), `attempts` times at most: after its n-th failure of kind `retry_on`, a pause of pause_s(n) and
    another try; the last try's failure is raised."""
    for failures in range(1, attempts):
        try:
            return await call()
        except retry_on:
            await asyncio.sleep(pause_s(failures))
    return await call()



def _sets_limits_of(stream: str) -> bool:
    """Whether this process may change `stream`'s configuration. In Kubernetes each service is its own NATS user, and
    only the vault may update DELETIONS (services/common/nats_permissions.py): an update could map other subjects
    onto the confirmations the vault certifies deletions by. Unnamed (the embedded stack), every service may."""
    user = os.environ.get(NATS_USER_ENV, "")
    return stream != DELETIONS_STREAM.name or user in ("", VAULT_SERVICE)

class Bus:
    """A NATS connection with the studio's topology declared."""

    def __init__(self, client: NatsClient) -> None:
        self.client = client
        self.js: JetStreamContext = client.jetstream()
        # Subjects being deleted in this process: nothing more is announced or sealed for them.
        self.guard = DeletionGuard()
        self._buckets: dict[str, KeyValue] = {}
        # Writes refused for want of space; a worker's wait (services/common/store_space.py).
        self.space = StoreSpace()

    @classmethod
    async def connect(cls, url: str, name: str) -> Bus:
        client = await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        bus = cls(client)
        try:
            await bus.declare()
        except BaseException:
            await bus.close()
            raise
        return bus

    async def declare(self) -> None:
        """Idempotent: every service declares the topology on start, whoever starts first. Each declaration is
        tried again while the cluster cannot answer yet (a pod may start beside a NATS cluster that is forming).
        A stream or bucket that exists with other limits (a deployment from before the budgets, or a budget
        changed since) gets the declared ones: nothing it holds is dropped (discard 'new' refuses, never trims)."""
        replicas = int(os.environ.get(REPLICAS_ENV, "1") or 1)
        budget = store_budget()
        for config in STREAMS:
            max_bytes = max_bytes_of(config.name, budget)
            await self._declare_stream(dataclasses.replace(config, num_replicas=replicas, max_bytes=max_bytes))
        for queue in WORK_QUEUES:
            await self._declared(self.js.add_consumer, queue.stream, queue.consumer_config())
            await self._declared(self.js.add_consumer, PENDING_STREAM.name, backlog_consumer(queue))
        for service in PURGING_SERVICES:
            await self._declared(self.js.add_consumer, DELETIONS_STREAM.name, purge_consumer(service))
        await self._declared(self.js.add_consumer, DELETIONS_STREAM.name, VAULT_CONFIRMATIONS_CONSUMER)
        for bucket in BUCKETS:
            self._buckets[bucket] = await self._declare_bucket(KeyValueConfig(
                bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas,
                max_bytes=max_bytes_of(bucket, budget), ttl=BUCKET_TTLS.get(bucket)))

    async def _declare_stream(self, config: StreamConfig) -> None:
        with _reservable(config.name, config.max_bytes):
            if not _sets_limits_of(config.name):
                await self._created_if_absent(config)
            elif not await self._limits_updated(config):
                await self._created(self.js.add_stream, config, config)
        STREAM_BUDGET.labels(config.name).set(config.max_bytes)

    async def _created_if_absent(self, config: StreamConfig) -> None:
        """The stream as it is when it exists (its limits are another service's to set), else created."""
        try:
            await self._declared(self.js.stream_info, config.name)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):  # created meanwhile by the service whose limits they are
                await self._declared(self.js.add_stream, config)

    async def _declare_bucket(self, config: KeyValueConfig) -> KeyValue:
        """nats-py makes a bucket's stream KV_<bucket>, discard 'new': a full bucket refuses new keys."""
        limits = StreamConfig(name=f"KV_{config.bucket}", max_bytes=config.max_bytes, discard=DiscardPolicy.NEW,
                              max_age=config.ttl)
        with _reservable(limits.name, config.max_bytes):
            if not await self._limits_updated(limits):
                await self._created(self.js.create_key_value, config, limits)
        STREAM_BUDGET.labels(limits.name).set(config.max_bytes)
        return await self._declared(self.js.key_value, config.bucket)

    async def _created(self, create: Callable[..., Awaitable[object]], config: object, limits: StreamConfig) -> None:
        """Created; when another service created it meanwhile with other limits, it gets these."""
        try:
            await self._declared(create, config)
        except BadRequestError as error:
            if getattr(error, "err_code", None) != CONFIG_DIFFERS:
                raise
            await self._limits_updated(limits)

    async def _limits_updated(self, wanted: StreamConfig) -> bool:
        """False when the stream does not exist yet. Else it now has `wanted`'s limits (those it sets), anything
        else in its configuration as it was (replicas, say). Updated, not created again: a cluster checks a
        creation's reservation before it finds the stream exists, and a budget near the servers' limit fails it."""
        try:
            current = (await self._declared(self.js.stream_info, wanted.name)).config
        except NotFoundError:
            return False
        limits = {name: getattr(wanted, name) for name in LIMIT_FIELDS if getattr(wanted, name) is not None}
        updated = dataclasses.replace(current, **limits)
        if updated != current:
            await self._declared(self.js.update_stream, updated)
            log.info("stream %s now has %s", wanted.name, limits)
        return True

    @staticmethod
    async def _declared(declare: Callable[..., Awaitable[T]], *args: object) -> T:
        return await _attempts(lambda: declare(*args), DECLARE_ATTEMPTS,
                               (nats.errors.TimeoutError, ServiceUnavailableError),
                               lambda failures: DECLARE_RETRY_S * failures)

    def bucket(self, name: str) -> KeyValue:
        return self._buckets[name]

    async def publish(self, subject: str, message: Message, msg_id: str | None = None) -> None:
        await self.publish_raw(subject, message.SerializeToString(), msg_id)

    async def publish_raw(self, subject: str, payload: bytes, msg_id: str | None = None) -> None:
        """Store `payload` in the stream that takes `subject`. No stream answering means nothing was stored: right
        after a stream is created, or while a cluster elects its leader, its interest has not reached this server
        yet, so the publish is tried again, up to PUBLISH_ATTEMPTS times. A full stream: see StoreSpace.write."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self.space.write(
            lambda: _attempts(lambda: self.js.publish(subject, payload, headers=headers), PUBLISH_ATTEMPTS,
                              NoStreamResponseError, lambda failures: PUBLISH_RETRY_S * 2 ** (failures - 1)),
            store_of(subject) or "other")

    async def consume(
        self, stream: str, durable: str, handle: Callable[[Msg], Awaitable[None]], batch: int = 8
    ) -> None:
        """Feed a durable pull consumer's messages to `handle` (which acks or naks) until cancelled."""
        subscription = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        while True:
            for message in await fetch_or_stop(subscription, batch):
                await handle(message)

    async def pull(self, queue: WorkQueue) -> JetStreamContext.PullSubscription:
        return await self.js.pull_subscribe_bind(durable=queue.durable, stream=queue.stream)

    async def kv_get(self, bucket: str, key: str, message_type: type[M]) -> M | None:
        value = await self.kv_raw(bucket, key)
        return None if value is None else message_type.FromString(value)

    async def kv_put(self, bucket: str, key: str, message: Message) -> None:
        await self.space.write(lambda: self.bucket(bucket).put(key, message.SerializeToString()), bucket)

    async def kv_create(self, bucket: str, key: str, value: bytes) -> bool:
        """Store only if absent; False when the key already exists (idempotency guards)."""
        try:
            await self.space.write(lambda: self.bucket(bucket).create(key, value), bucket)
        except Exception as error:  # nats-py raises KeyWrongLastSequenceError / APIError variants
            if "wrong last sequence" in str(error).lower() or "exists" in str(error).lower():
                return False
            raise
        return True

    async def kv_raw(self, bucket: str, key: str) -> bytes | None:
        try:
            entry = await self.bucket(bucket).get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def kv_keys(self, bucket: str) -> list[str]:
        """Every key of `bucket`, [] when it is empty. A listing that fails (its watcher's consumer request timed
        out on a loaded host) is tried again, then raised: an empty answer would read as 'no such key'."""
        return await _attempts(lambda: self._keys(bucket), KV_LIST_ATTEMPTS, Exception, lambda failures: 0.2 * failures)

    async def _keys(self, bucket: str) -> list[str]:
        try:
            return list(await self.bucket(bucket).keys())
        except NoKeysError:
            return []

    async def kv_entry(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        """A key's value and revision ((None, 0) when absent), for compare-and-set updates."""
        try:
            entry = await self.bucket(bucket).get(key)
        except KeyNotFoundError:
            return None, 0
        return entry.value, entry.revision or 0

    async def kv_compare_and_set(self, bucket: str, key: str, value: bytes, revision: int) -> bool:
        """Store only if the key is still at `revision` (0: still absent); False when someone else wrote."""
        if not revision:
            return await self.kv_create(bucket, key, value)
        try:
            await self.space.write(lambda: self.bucket(bucket).update(key, value, last=revision), bucket)
        except Exception as error:
            if "wrong last sequence" in str(error).lower():
                return False
            raise
        return True

    async def kv_keys_matching(self, bucket: str, pattern: str) -> list[str]:
        """Keys matching a NATS wildcard pattern, filtered by the server (not a scan of the bucket). The server
        names at most 100,000 subjects per answer, which says how many there are in all: the rest are asked for."""
        prefix, keys = f"$KV.{bucket}.", []
        while True:
            request = {"subjects_filter": prefix + pattern, "offset": len(keys)}
            response = await self.client.request(f"$JS.API.STREAM.INFO.KV_{bucket}", json.dumps(request).encode(),
                                                 timeout=10)
            info = json.loads(response.data)
            subjects = (info.get("state") or {}).get("subjects") or {}
            keys += [subject[len(prefix):] for subject in subjects]
            if not subjects or len(keys) >= int(info.get("total") or 0):
                return list(dict.fromkeys(keys))  # a key stored between two answers may shift into both

    async def kv_purge(self, bucket: str, key: str) -> None:
        """Remove a key and its history without leaving a marker that names the key."""
        await self.purge_subject(f"KV_{bucket}", f"$KV.{bucket}.{key}")

    async def kv_purge_matching(self, bucket: str, pattern: str) -> int:
        """Remove every key matching a NATS wildcard pattern, with its history; how many messages went."""
        return await self.purge_subject(f"KV_{bucket}", f"$KV.{bucket}.{pattern}")

    async def purge_subject(self, stream: str, subject: str, below_seq: int = 0) -> int:
        """Erase every message on `subject` (wildcards allowed) from `stream`, or only those before sequence
        `below_seq` when given (a message stored since stays); how many went."""
        request: dict[str, object] = {"filter": subject, **({"seq": below_seq} if below_seq else {})}
        response = await self.client.request(f"$JS.API.STREAM.PURGE.{stream}", json.dumps(request).encode(),
                                             timeout=10)
        reply = json.loads(response.data)
        if "error" in reply:
            raise RuntimeError(f"purge of {stream} failed: {reply['error'].get('description')}")
        return int(reply.get("purged", 0))

    async def queued_jobs(self, queue: WorkQueue) -> AsyncIterator[tuple[int, bytes]]:
        """Each queued (or in-flight) job of `queue` as its stream sequence and payload; a work queue holds few
        messages, so a scan is cheap."""
        info = await self.js.stream_info(queue.stream)
        if not info.state.messages:  # an empty stream reports sequence 0, which get_msg refuses
            return
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                message = await self.js.get_msg(queue.stream, seq)
            except NotFoundError:  # acknowledged, or deleted by a purge
                continue
            if message.data:
                yield seq, message.data

    async def delete_queued_jobs(self, queue: WorkQueue, matches: Callable[[bytes], bool]) -> int:
        """Erase queued (or in-flight) jobs whose payload `matches`."""
        deleted = 0
        async for seq, payload in self.queued_jobs(queue):
            if matches(payload):
                await self.js.delete_msg(queue.stream, seq)
                deleted += 1
        return deleted

    async def holds_messages_on(self, stream: str, subject: str) -> bool:
        """Whether `stream` stores any message on `subject` (wildcards allowed)."""
        return bool((await self.js.stream_info(stream, subjects_filter=subject)).state.subjects)

    async def close(self) -> None:
        # close, not drain: draining waits on idle pull subscriptions and would stall shutdown.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), timeout=3)


@contextlib.contextmanager
def _reservable(name: str, max_bytes: int | None) -> Iterator[None]:
    """A budget the server cannot reserve stops the service with what to change, not a bare server error."""
    try:
        yield
    except APIError as error:
        code, description = getattr(error, "err_code", None), getattr(error, "description", None) or ""
        if code != STORAGE_RESOURCES_EXCEEDED and not (code == NO_PEERS and "insufficient storage" in description):
            raise
        raise RuntimeError(
            f"NATS cannot reserve {max_bytes} bytes for stream {name}: {STORE_BYTES_ENV} ({store_budget()}) is more "
            "than the server's JetStream max_file_store (by default 75% of the disk free when it started) leaves; "
            f"lower {STORE_BYTES_ENV} or give NATS more storage") from error
