"""What every public API verb needs: the bus, the sealed store, the vault and faceqa clients,
plus tenant authentication and ownership checks that answer exactly like a missing id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from studio.v1 import faceqa_pb2_grpc, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.secrets import API_KEY_METADATA
from services.common.tls import peer_common_name
from services.common.vault_client import SealedStore, VaultClient
from services.ingest import fields, tenants
from services.ingest.tenants import ensure_tenant

__all__ = ["IngestContext", "ensure_tenant", "update_record"]
CAS_ATTEMPTS = 50
M = TypeVar("M", bound=Message)


async def update_record(
    bus: Bus, bucket: str, key: str, message_type: type[M], mutate: Callable[[M], None]
) -> M | None:
    """Read-modify-write of a KV record by compare-and-set (`mutate` runs again on the newer record when another
    writer came first); None when the record is gone, and then nothing is written."""
    for _ in range(CAS_ATTEMPTS):
        raw, revision = await bus.kv_entry(bucket, key)
        if raw is None:
            return None
        record = message_type.FromString(raw)
        mutate(record)
        if await bus.kv_compare_and_set(bucket, key, record.SerializeToString(), revision):
            return record
    raise RuntimeError(f"record {key} of {bucket} is contended")


@dataclass
class IngestContext:
    bus: Bus
    sealed: SealedStore
    vault: VaultClient
    faceqa: faceqa_pb2_grpc.FaceQAStub
    base_model_id: str
    base_resolution: int
    train_steps: int
    render_steps: int
    # Accepted photos a subject needs before an order (STUDIO_MIN_ACCEPTED_PHOTOS); a tenant's own
    # TenantRecord.min_accepted_photos wins when set.
    min_accepted_photos: int = 10

    def min_accepted_for(self, tenant: state_pb2.TenantRecord) -> int:
        return tenant.min_accepted_photos or self.min_accepted_photos

    async def authenticate(self, context: grpc.aio.ServicerContext) -> state_pb2.TenantRecord:
        """The calling tenant: by its verified mTLS client certificate on a TLS public port, else by
        the API key in the metadata."""
        identity = peer_common_name(context)
        if identity:
            tenant = await tenants.authenticate(self.bus, cert_identity=identity)
            if tenant is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "certificate is not bound to an enabled tenant")
            return tenant
        api_key = dict(context.invocation_metadata() or ()).get(API_KEY_METADATA, "")
        if not api_key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing API key in '{API_KEY_METADATA}'")
        tenant = await tenants.authenticate(self.bus, api_key=api_key)
        if tenant is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or disabled API key")
        return tenant

    async def owned_subject(
        self, tenant: state_pb2.TenantRecord, subject_id: str, context: grpc.aio.ServicerContext
    ) -> state_pb2.SubjectRecord:
        await self.check_subject_id(subject_id, context)
        record = await self.bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
        if record is None or record.tenant_id != tenant.tenant_id or self.being_deleted(subject_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(subject_id))
        return record

    def being_deleted(self, subject_id: str) -> bool:
        """Deleted, its purge not yet done (it waits out the services' key caches): gone for every caller."""
        return self.bus.guard.is_deleted(subject_id)

    @staticmethod
    async def check_subject_id(subject_id: str, context: grpc.aio.ServicerContext) -> None:
        """An id not of the shape we hand out (NATS KV could not even look it up) answers like a missing one."""
        if not fields.well_formed(fields.SUBJECT_ID, subject_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, fields.subject_not_found(subject_id))

    async def update_subject(
        self, subject_id: str, mutate: Callable[[state_pb2.SubjectRecord], None]
    ) -> state_pb2.SubjectRecord | None:
        """Read-modify-write of a subject record by compare-and-set, so concurrent uploads and orders
        never lose each other's changes; None when the subject is gone."""
        return await update_record(self.bus, topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord, mutate)

    async def owned_order(
        self, tenant: state_pb2.TenantRecord, order_id: str, context: grpc.aio.ServicerContext
    ) -> state_pb2.OrderRecord:
        record = None
        if fields.well_formed(fields.ORDER_ID, order_id):  # else answered like a missing id
            record = await self.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
        if record is None or record.tenant_id != tenant.tenant_id or self.being_deleted(record.order.subject_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, fields.order_not_found(order_id))
        return record
