"""Idempotency keys for CreateSubject and CreateOrder.

The first request with a key claims it (a KV create: exactly one wins, across replicas too) with the
id its resource will get and a digest of the request. A repeat (a retry after a lost reply, or a
concurrent twin) gets the same id: it returns the resource once it exists, and completes the creation
itself with the same id and creation time if the first request died half-way. The same key with a
different request is refused."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from google.protobuf.message import Message
from studio.v1 import state_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest import fields

# How long a repeat waits for its twin to finish before completing the creation itself.
TWIN_WAIT_S = 3.0


class KeyReused(ValueError):
    pass


def key_problem(request: Message) -> str | None:
    """The reason for INVALID_ARGUMENT when the request's idempotency key is too long, else None."""
    return fields.too_long("idempotency_key", getattr(request, "idempotency_key", ""), fields.MAX_IDEMPOTENCY_KEY_CHARS)


def idempotency_entry(tenant_id: str, kind: str, idempotency_key: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}\0{kind}\0{idempotency_key}".encode()).hexdigest()
    return f"{kind}.{digest}"


def request_digest(request: Message) -> str:
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class Claim:
    entry: str  # '' without an idempotency key
    resource_id: str
    created_ms: int
    first: bool  # this request claimed the key (or had none)


async def claim(bus: Bus, tenant_id: str, kind: str, request: Message, new_id: str) -> Claim:
    now_ms = int(time.time() * 1000)
    key = getattr(request, "idempotency_key", "")
    if not key:
        return Claim("", new_id, now_ms, True)
    entry = idempotency_entry(tenant_id, kind, key)
    record = state_pb2.IdempotencyEntry(resource_id=new_id, request_sha256=request_digest(request), created_ms=now_ms)
    if await bus.kv_create(topology.IDEMPOTENCY_BUCKET, entry, record.SerializeToString()):
        return Claim(entry, new_id, now_ms, True)
    existing = await bus.kv_get(topology.IDEMPOTENCY_BUCKET, entry, state_pb2.IdempotencyEntry)
    if existing is None:  # released in between (a refused twin): claim again
        return await claim(bus, tenant_id, kind, request, new_id)
    if existing.request_sha256 != record.request_sha256:
        raise KeyReused(f"idempotency key '{fields.shown_id(key)}' was used for a different {kind} request")
    return Claim(entry, existing.resource_id, existing.created_ms, False)


async def release(bus: Bus, claimed: Claim) -> None:
    """Give the key back when the request was refused before it created anything."""
    if claimed.entry and claimed.first:
        await bus.kv_purge(topology.IDEMPOTENCY_BUCKET, claimed.entry)


async def abandoned(bus: Bus, claimed: Claim) -> bool:
    """The twin that claimed the key gave it back (it was refused): this request must not go on."""
    return await bus.kv_raw(topology.IDEMPOTENCY_BUCKET, claimed.entry) is None


ABANDONED = "a concurrent request with this idempotency key was refused; send the request again"


async def wait_for(bus: Bus, bucket: str, key: str, message_type: type[Message]) -> Message | None:
    """A twin's resource, once written; None if it did not appear in time (the twin died)."""
    deadline = time.monotonic() + TWIN_WAIT_S
    while True:
        record = await bus.kv_get(bucket, key, message_type)
        if record is not None or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.05)
