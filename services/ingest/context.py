"""What every public API verb needs: the bus, the sealed store, the vault and faceqa clients,
plus tenant authentication and ownership checks that answer exactly like a missing id."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from studio.v1 import faceqa_pb2_grpc, state_pb2

from services.common import bus as topology
from services.common.bus import Bus
from services.common.secrets import API_KEY_METADATA, hash_api_key
from services.common.vault_client import SealedStore, VaultClient


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
        api_key = dict(context.invocation_metadata() or ()).get(API_KEY_METADATA, "")
        if not api_key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing API key in '{API_KEY_METADATA}'")
        tenant = await self.bus.kv_get(topology.TENANTS_BUCKET, hash_api_key(api_key), state_pb2.TenantRecord)
        if tenant is None or tenant.disabled:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or disabled API key")
        return tenant

    async def owned_subject(
        self, tenant: state_pb2.TenantRecord, subject_id: str, context: grpc.aio.ServicerContext
    ) -> state_pb2.SubjectRecord:
        record = None
        if subject_id:
            record = await self.bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
        if record is None or record.tenant_id != tenant.tenant_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"subject '{subject_id}' not found")
        return record

    async def owned_order(
        self, tenant: state_pb2.TenantRecord, order_id: str, context: grpc.aio.ServicerContext
    ) -> state_pb2.OrderRecord:
        record = None
        if order_id:
            record = await self.bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)
        if record is None or record.tenant_id != tenant.tenant_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"order '{order_id}' not found")
        return record


async def ensure_tenant(bus: Bus, tenant_id: str, name: str, api_key: str, min_accepted_photos: int = 0) -> None:
    """Register (or re-register) a tenant's API key; used for the embedded stack's default tenant."""
    record = state_pb2.TenantRecord(
        tenant_id=tenant_id, name=name, api_key_hash=hash_api_key(api_key), min_accepted_photos=min_accepted_photos
    )
    await bus.kv_put(topology.TENANTS_BUCKET, record.api_key_hash, record)
