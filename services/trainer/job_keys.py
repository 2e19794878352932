"""Where a training job's TrainJobRecord lives in TRAIN_JOBS_BUCKET: under `<subject_id>.<job_id>`, so that a
deletion finds its subject's records with one listing the server filters (as the renderer's finished marks are
keyed), instead of reading the record of every job within retention.

Records an earlier version wrote sit under `<job_id>` alone, one token. A reader takes the newer of the two keys (a
KV revision is the bucket stream's sequence number, so revisions compare across keys). Each trainer re-keys the
old ones once it has caught up with deletions (rekey_old_records), and a deletion's purge also reads the old-scheme
records still there: a listing that is empty, one request, once they are re-keyed."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable

from studio.v1 import trainer_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.deletion_guard import SubjectDeleted
from services.common.vault_client import SealedStore

log = logging.getLogger(__name__)

BUCKET = topology.TRAIN_JOBS_BUCKET
# One token of a key: ids are `<prefix>_<hex>` (services/common/objects.py new_id), job ids `train-<order id>`.
TOKEN = re.compile(r"[-_a-zA-Z0-9]+")
OLD_SCHEME = "*"  # a key of one token: the job id alone
# Old records that name no subject, neither in their fields nor in an object key (written before records named
# their subject, by a job that stored no checkpoint): kept under `unattributed.<job_id>`; no deletion can match them.
UNATTRIBUTED = "unattributed"
OWNED_OBJECT = re.compile(r"tenants/[^/]+/subjects/([^/]+)/")
REKEY_WORKERS = 16


def is_token(value: str) -> bool:
    return TOKEN.fullmatch(value) is not None


def record_key(subject_id: str, job_id: str) -> str:
    if not (is_token(subject_id) and is_token(job_id)):
        raise ValueError(f"job {job_id!r} of subject {subject_id!r}: ids must be NATS subject tokens")
    return f"{subject_id}.{job_id}"


def subject_records(subject_id: str) -> str:
    """The key pattern of a subject's records."""
    return f"{subject_id}.>"


def owner(record: trainer_pb2.TrainJobRecord) -> str:
    """The subject a record belongs to: named by it, or by where its checkpoint or LoRA is stored ('' if neither)."""
    if record.subject_id:
        return record.subject_id
    for key in (record.checkpoint_key, record.completion.lora_key):
        if found := OWNED_OBJECT.match(key):
            return found.group(1)
    return ""


async def read_record(bus: Bus, subject_id: str, job_id: str) -> trainer_pb2.TrainJobRecord | None:
    """The job's record, or its earlier-scheme record when that one was written later (a trainer of the earlier
    version ran the job, and no trainer re-keyed it since). The old key is read first: a re-key writes the new key
    before it removes the old one, so a record being re-keyed is seen under one key or the other."""
    old, old_revision = await bus.kv_entry(BUCKET, job_id)
    value, revision = await bus.kv_entry(BUCKET, record_key(subject_id, job_id))
    newest = old if old_revision > revision else value
    return None if newest is None else trainer_pb2.TrainJobRecord.FromString(newest)


async def old_scheme_keys(bus: Bus) -> list[str]:
    """Keys of the earlier scheme (one token: a job id), filtered by the server."""
    return await bus.kv_keys_matching(BUCKET, OLD_SCHEME)


async def purge_through(bus: Bus, key: str, revision: int) -> int:
    """Erase `key`'s messages up to `revision`, no marker left: a write made since stays. How many went."""
    return await bus.purge_subject(f"KV_{BUCKET}", f"$KV.{BUCKET}.{key}", below_seq=revision + 1)


async def rekey_old_records(bus: Bus, sealed: SealedStore) -> int:
    """Move every record of the earlier scheme to its key of this one; how many moved. Idempotent, and safe beside
    other trainers doing the same, jobs and deletions, and after a crash midway: a record is copied before its old
    key goes, a copy never replaces a later write, and the old key goes only as it was read (a later write stays
    for the next pass). A deleted subject's old record goes without a copy."""
    moved, previous = 0, None
    while (keys := await old_scheme_keys(bus)) and set(keys) != previous:  # stops when a pass moved nothing
        previous = set(keys)
        random.shuffle(keys)  # trainers starting together mostly take different records
        moved += await _count_each(keys, lambda key: rekey(bus, sealed, key))
    return moved


async def rekey(bus: Bus, sealed: SealedStore, key: str) -> bool:
    """Re-key one old record; False when it was gone, or changed since it was read."""
    value, revision = await bus.kv_entry(BUCKET, key)
    if value is None:
        return False
    subject_id = owner(trainer_pb2.TrainJobRecord.FromString(value))
    try:
        if is_token(subject_id):
            async with sealed.writing(subject_id):  # a deletion's purge waits for it, or it is refused
                await _copy(bus, record_key(subject_id, key), value, revision)
        else:
            await _copy(bus, f"{UNATTRIBUTED}.{key}", value, revision)
    except SubjectDeleted:
        log.info("an old job record of a deleted subject is erased, not re-keyed")
    return await purge_through(bus, key, revision) > 0


async def _copy(bus: Bus, key: str, value: bytes, revision: int) -> None:
    """Store `value` (read at `revision`) under `key`, unless something was written there after it."""
    _, current_revision = await bus.kv_entry(BUCKET, key)  # revision 0: absent
    if current_revision < revision:  # False from the compare-and-set: written meanwhile, after it too
        await bus.kv_compare_and_set(BUCKET, key, value, current_revision)


async def rekey_at_start(bus: Bus, sealed: SealedStore) -> None:
    """A trainer's background task: re-key, and leave what failed to the next start (purges still find old
    records)."""
    try:
        moved = await rekey_old_records(bus, sealed)
    except Exception:
        log.exception("re-keying the job records of the earlier scheme failed; the next start tries again")
        return
    if moved:
        log.info("re-keyed %d job records of the earlier key scheme", moved)


async def _count_each(items: Iterable[str], action: Callable[[str], Awaitable[bool]]) -> int:
    """`action` on every item, REKEY_WORKERS at a time; how many returned True."""
    pending, done = iter(items), 0

    async def work() -> None:
        nonlocal done
        for item in pending:
            succeeded = await action(item)  # awaited first: `done += await ...` would add to a stale count
            done += succeeded

    await asyncio.gather(*(work() for _ in range(REKEY_WORKERS)))
    return done
