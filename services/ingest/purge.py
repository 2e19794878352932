"""ingest's part of a deletion: the subject's photos, its order records and their event history,
its KV views (upload progress, by client photo id, lives in the subject record), idempotency entries,
listing-index entries, its orders in the tenant's running-order quota, and its jobs held for the scheduler
(PENDING). Exports keep no data."""

from __future__ import annotations

from studio.v1 import events_pb2, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.objects import subject_area
from services.common.vault_client import SealedStore
from services.ingest.listing import subject_index_patterns
from services.ingest.quotas import forget_orders


def purge_handler(bus: Bus, sealed: SealedStore):
    async def purge(request: events_pb2.DeletionRequested) -> dict[str, int]:
        tenant_id, subject_id = request.tenant_id, request.subject_id
        record = await bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
        if record is not None and record.tenant_id != tenant_id:
            record = None  # never touch another tenant's record, whatever the id
        order_ids = list(record.order_ids) if record else []
        entries = list(record.idempotency_entries) if record else []
        held_jobs = await bus.purge_subject(topology.PENDING_STREAM.name, topology.pending_of_subject(subject_id))
        events = 0
        for order_id in order_ids:
            events += await bus.purge_subject(topology.EVENTS_STREAM.name, topology.order_events_subject(order_id))
            await bus.kv_purge(topology.ORDERS_BUCKET, order_id)
            await bus.kv_purge(topology.CANCELLED_ORDERS_BUCKET, order_id)
        for entry in entries:
            await bus.kv_purge(topology.IDEMPOTENCY_BUCKET, entry)
        index_entries = 0
        for pattern in subject_index_patterns(tenant_id, subject_id):
            index_entries += await bus.purge_subject(
                f"KV_{topology.TENANT_INDEX_BUCKET}", f"$KV.{topology.TENANT_INDEX_BUCKET}.{pattern}"
            )
        running = await forget_orders(bus, tenant_id, order_ids)
        if record is not None:
            await bus.kv_purge(topology.SUBJECTS_BUCKET, subject_id)
        # Each service destroys what it wrote (crops, LoRAs, portraits...), so the certificate says who
        # destroyed what; ingest wrote the photos.
        photos = await sealed.blobs.delete_prefix(subject_area(tenant_id, subject_id, "photos"))
        return {"photos": photos, "orders": len(order_ids), "order_events": events,
                "idempotency_entries": len(entries), "subject_records": int(record is not None),
                "index_entries": index_entries, "running_order_slots": running, "held_jobs": held_jobs}

    return purge

