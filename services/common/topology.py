"""The one place that declares every NATS subject, stream, consumer and KV bucket.

Payloads are protobuf messages (protos/studio/v1/events.proto), never ad-hoc JSON. services/common/bus.py
declares them on the server (Bus.declare) and is the services' client for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

# JetStream replicas of every stream and bucket: 1 on one server, 3 on a NATS cluster.
REPLICAS_ENV = "STUDIO_NATS_REPLICAS"
# The bytes every stream and bucket together may hold on each NATS server, split by STORE_SHARES (below). Every
# server reserves each stream's max_bytes against its JetStream max_file_store, and a replicated stream is stored
# whole on each of its servers: on 3 nodes with 3 replicas the budget is what one node holds, not a third of it.
STORE_BYTES_ENV = "STUDIO_NATS_STORE_BYTES"
DEFAULT_STORE_BYTES = 4 * 2**30  # the embedded stack: small records, years of them for one studio
MIN_STORE_BYTES = 2**20

TRAIN_SUBJECT = "studio.train.jobs"
RENDER_SUBJECT = "studio.render.jobs"
ORDER_EVENTS_PREFIX = "studio.events.order"


def _stream(name: str, subject: str, retention: RetentionPolicy = RetentionPolicy.LIMITS,
            discard: DiscardPolicy = DiscardPolicy.NEW, **limits) -> StreamConfig:
    """A file-backed stream over one subject (pattern) that drops a message id seen in the last 10 minutes. At its
    budget (max_bytes, set by Bus.declare) it refuses new messages: nothing stored is ever dropped to make room."""
    return StreamConfig(name=name, subjects=[subject], retention=retention, storage=StorageType.FILE,
                        duplicate_window=600.0, discard=discard, **limits)


TRAIN_STREAM = _stream("TRAIN", TRAIN_SUBJECT, RetentionPolicy.WORK_QUEUE)
RENDER_STREAM = _stream("RENDER", RENDER_SUBJECT, RetentionPolicy.WORK_QUEUE)
# The one stream that drops its oldest messages, at its budget as after 30 days: order events, which ingest's
# order view (KV) has taken in long before.
EVENTS_STREAM = _stream("EVENTS", "studio.events.>", discard=DiscardPolicy.OLD, max_age=30 * 24 * 3600.0)
# Deletion: the vault announces on studio.deletion.<id>.requested after shredding the key; each
# service answers on studio.deletion.<id>.confirmed.<service>. The vault purges both once certified.
DELETION_PREFIX = "studio.deletion"
DELETIONS_STREAM = _stream("DELETIONS", f"{DELETION_PREFIX}.>")
# Scheduling: jobs wait here, one message per job on pending_subject(...), until ingest's dispatcher
# releases them into TRAIN/RENDER by weighted fair queuing as worker slots free up.
PENDING_PREFIX = "studio.pending"
PENDING_STREAM = _stream("PENDING", f"{PENDING_PREFIX}.>")
STREAMS = (TRAIN_STREAM, RENDER_STREAM, EVENTS_STREAM, DELETIONS_STREAM, PENDING_STREAM)
# Every service that holds subject data; the vault certifies a deletion once each has confirmed.
PURGING_SERVICES = ("ingest", "faceqa", "trainer", "renderer")
# The vault: the one service that requests deletions and certifies them.
VAULT_SERVICE = "privacy"


# Deliveries past a queue's max_deliver only record the job's failure (services/common/workqueue.py): the
# first comes when the last attempt's worker was killed, the others when recording the failure failed.
FAILURE_DELIVERIES = 3


@dataclass(frozen=True)
class WorkQueue:
    stream: str
    subject: str
    durable: str
    ack_wait_s: float
    max_deliver: int  # attempts at running a job; the server delivers it FAILURE_DELIVERIES more times

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver + FAILURE_DELIVERIES,
            filter_subject=self.subject,
            max_ack_pending=64,
        )


# Workers send in_progress heartbeats well inside ack_wait, so a live job is never redelivered
# while a killed worker's job comes back after ack_wait.
# STUDIO_TRAIN_ACK_WAIT_S (same value in every service) sets how soon a killed trainer's job returns.
TRAIN_QUEUE = WorkQueue("TRAIN", TRAIN_SUBJECT, "trainer",
                        ack_wait_s=float(os.environ.get("STUDIO_TRAIN_ACK_WAIT_S", "60")), max_deliver=5)
RENDER_QUEUE = WorkQueue("RENDER", RENDER_SUBJECT, "renderer", ack_wait_s=60.0, max_deliver=5)
WORK_QUEUES = (TRAIN_QUEUE, RENDER_QUEUE)


def pending_subject(queue: WorkQueue, tier: str, tenant_id: str, subject_id: str, order_id: str) -> str:
    """One job's place in PENDING: studio.pending.<queue>.<tier>.<tenant>.<subject>.<order>."""
    tokens = (queue.stream, tier, tenant_id, subject_id, order_id)
    if any(not token or any(c in token for c in ".*> \t") for token in tokens):
        raise ValueError(f"cannot hold a job under {tokens}: ids must be non-empty NATS subject tokens")
    return ".".join((PENDING_PREFIX, *tokens))


def pending_of_subject(subject_id: str) -> str:
    return f"{PENDING_PREFIX}.*.*.*.{subject_id}.*"


def pending_of_order(order_id: str) -> str:
    return f"{PENDING_PREFIX}.*.*.*.*.{order_id}"


def backlog_consumer(queue: WorkQueue) -> ConsumerConfig:
    """Never pulled: its lag is the queue's held backlog, which KEDA scales the workers on."""
    return ConsumerConfig(
        durable_name=f"{queue.durable}-backlog",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=f"{PENDING_PREFIX}.{queue.stream}.>",
    )


# Workers' WorkerHeartbeat messages, core NATS only (nothing stored): studio.workers.<queue stream>.
WORKER_HEARTBEAT_PREFIX = "studio.workers"


def worker_heartbeat_subject(queue: WorkQueue) -> str:
    return f"{WORKER_HEARTBEAT_PREFIX}.{queue.stream}"


def _from_the_start(durable: str, subject: str, ack_wait_s: float = 30.0) -> ConsumerConfig:
    """A durable consumer of everything stored under `subject`, each message acked once handled."""
    return ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s,
                          deliver_policy=DeliverPolicy.ALL, filter_subject=subject)


# ingest keeps the order view (KV) up to date from the event stream.
ORDER_VIEW_CONSUMER = _from_the_start("ingest-order-view", f"{ORDER_EVENTS_PREFIX}.>")


# Every replica of every purging service also reads each deletion request (an ordered consumer each, not
# a durable one): its own guard then refuses the subject at once, whichever replica holds the purge.
DELETION_REQUESTS = f"{DELETION_PREFIX}.*.requested"


# Durable and shared by a service's replicas, so a service that is down when a deletion starts purges
# when it comes back.
def purge_consumer(service: str) -> ConsumerConfig:
    return _from_the_start(f"purge-{service}", DELETION_REQUESTS, ack_wait_s=120.0)


VAULT_CONFIRMATIONS_CONSUMER = _from_the_start("vault-confirmations", f"{DELETION_PREFIX}.*.confirmed.*")


def deletion_requested_subject(deletion_id: str) -> str:
    return f"{DELETION_PREFIX}.{deletion_id}.requested"


def deletion_confirmed_subject(deletion_id: str, service: str) -> str:
    return f"{DELETION_PREFIX}.{deletion_id}.confirmed.{service}"


def deletion_subjects(deletion_id: str) -> str:
    return f"{DELETION_PREFIX}.{deletion_id}.>"


TENANTS_BUCKET = "studio_tenants"
SUBJECTS_BUCKET = "studio_subjects"
PHOTOS_BUCKET = "studio_photos"
ORDERS_BUCKET = "studio_orders"
IDEMPOTENCY_BUCKET = "studio_idempotency"
# Trainer bookkeeping per training job (TrainJobRecord): checkpoint location, done-once marker. Keyed
# `<subject>.<job id>` (services/trainer/job_keys.py; `<job id>` keys of earlier releases are re-keyed at trainer
# start, `unattributed.<job id>` for records naming no subject).
TRAIN_JOBS_BUCKET = "studio_train_jobs"
# Cancelled orders (key = order id): workers drop their jobs. Written by ingest's CancelOrder.
CANCELLED_ORDERS_BUCKET = "studio_cancelled_orders"
# Tenant accounts by tenant id (TenantRecord; TENANTS_BUCKET indexes them by API key hash and by
# `cert.<sha256 of a certificate identity>`). Written by ingest's TenantAdmin.
TENANT_ACCOUNTS_BUCKET = "studio_tenant_accounts"
# Quota usage per tenant: `<tenant>.<quota>.<yyyymmdd>` (UsageCounter, the current UTC day only),
# `<tenant>.active_orders` (ActiveOrders).
TENANT_USAGE_BUCKET = "studio_tenant_usage"
# Listing index, newest first by key: `<tenant>.s.<created ms>.<subject>` and
# `<tenant>.o.<created ms>.<subject>.<order>` (empty values). Purged with the subject.
TENANT_INDEX_BUCKET = "studio_tenant_index"
# The dispatcher's lease (one active instance) and measured service times per work queue.
SCHEDULER_BUCKET = "studio_scheduler"
# Sealed writes under way on any replica: `<subject>.<writer instance>.<n>` = when the writer last renewed it,
# purged when the write ends. A deletion's purge waits for the subject's entries (services/common/write_leases.py).
# A lease its writer stopped renewing (killed mid-write) expires after WRITE_LEASE_TTL_S; renewed ones never do.
WRITE_LEASES_BUCKET = "studio_write_leases"
WRITE_LEASE_TTL_S = 3600.0
# What render jobs delivered: `<subject>.<render job id>` = a finished job's OrderDone, and
# `<subject>.<render job id>.<portrait id>` = each Portrait as it was stored and announced. A job delivered again
# (its worker killed before the acknowledgement) keeps what it delivered instead of rendering it again.
# Purged with the subject.
RENDERS_DONE_BUCKET = "studio_renders_done"
BUCKETS = (TENANTS_BUCKET, SUBJECTS_BUCKET, PHOTOS_BUCKET, ORDERS_BUCKET, IDEMPOTENCY_BUCKET, TRAIN_JOBS_BUCKET,
           CANCELLED_ORDERS_BUCKET, TENANT_ACCOUNTS_BUCKET, TENANT_USAGE_BUCKET, TENANT_INDEX_BUCKET,
           SCHEDULER_BUCKET, WRITE_LEASES_BUCKET, RENDERS_DONE_BUCKET)
# Buckets whose keys expire (seconds since a key's last write); the others keep theirs until purged.
BUCKET_TTLS = {WRITE_LEASES_BUCKET: WRITE_LEASE_TTL_S}


# Each stream's and bucket's share of STUDIO_NATS_STORE_BYTES (of the sum of shares), after what it holds: order
# events for 30 days; photo records with their embeddings; orders with their history; portraits delivered. Queues,
# leases and the scheduler's state hold little at a time.
STORE_SHARES: dict[str, int] = {
    EVENTS_STREAM.name: 24, PHOTOS_BUCKET: 14, ORDERS_BUCKET: 12, RENDERS_DONE_BUCKET: 8, SUBJECTS_BUCKET: 6,
    IDEMPOTENCY_BUCKET: 6, TENANT_INDEX_BUCKET: 5, PENDING_STREAM.name: 5, TRAIN_JOBS_BUCKET: 4,
    DELETIONS_STREAM.name: 4, TRAIN_STREAM.name: 2, RENDER_STREAM.name: 2, TENANT_USAGE_BUCKET: 2,
    CANCELLED_ORDERS_BUCKET: 2, WRITE_LEASES_BUCKET: 1, SCHEDULER_BUCKET: 1, TENANTS_BUCKET: 1,
    TENANT_ACCOUNTS_BUCKET: 1,
}


def store_budget() -> int:
    """STUDIO_NATS_STORE_BYTES (a whole number of bytes), DEFAULT_STORE_BYTES when unset."""
    raw = os.environ.get(STORE_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_STORE_BYTES
    if not raw.isdigit() or int(raw) < MIN_STORE_BYTES:
        raise ValueError(f"{STORE_BYTES_ENV} must be a whole number of bytes, at least {MIN_STORE_BYTES}; got {raw!r}")
    return int(raw)


def max_bytes_of(name: str, budget: int) -> int:
    """The budget of the stream or KV bucket `name`: its share of `budget`."""
    return max(1, budget * STORE_SHARES[name] // sum(STORE_SHARES.values()))


def store_of(subject: str) -> str:
    """The stream that stores `subject` (a published one, no wildcards), or "" when none of ours does."""
    tokens = subject.split(".")
    for stream in STREAMS:
        if any(_matches(pattern.split("."), tokens) for pattern in stream.subjects or ()):
            return stream.name
    return ""


def _matches(pattern: list[str], tokens: list[str]) -> bool:
    for index, token in enumerate(pattern):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(pattern)


def order_events_subject(order_id: str) -> str:
    return f"{ORDER_EVENTS_PREFIX}.{order_id}"
