"""AdminClient: the operator's tenant management (TenantAdmin, authenticated by the operator token)."""

from __future__ import annotations

import grpc
from studio.v1 import admin_pb2, admin_pb2_grpc

OPERATOR_TOKEN_METADATA = "x-operator-token"


class AdminClient:
    def __init__(self, endpoint: str, operator_token: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.channel = (grpc.aio.secure_channel(endpoint, credentials) if credentials
                        else grpc.aio.insecure_channel(endpoint))
        self.stub = admin_pb2_grpc.TenantAdminStub(self.channel)
        self.metadata = ((OPERATOR_TOKEN_METADATA, operator_token),)

    async def close(self) -> None:
        await self.channel.close()

    async def create(self, name: str, **settings) -> admin_pb2.CreateTenantResponse:
        quota_names = admin_pb2.TenantQuotas.DESCRIPTOR.fields_by_name
        quotas = admin_pb2.TenantQuotas(**{k: v for k, v in settings.items() if k in quota_names})
        request = admin_pb2.CreateTenantRequest(
            name=name, quotas=quotas, min_accepted_photos=settings.get("min_accepted_photos", 0),
            default_retention_days=settings.get("default_retention_days", 0),
            cert_identities=settings.get("cert_identities", ()),
            max_photo_age_days=settings.get("max_photo_age_days", 0),
        )
        return await self.stub.CreateTenant(request, metadata=self.metadata, timeout=30)

    async def list(self) -> list[admin_pb2.Tenant]:
        response = await self.stub.ListTenants(admin_pb2.ListTenantsRequest(), metadata=self.metadata, timeout=30)
        return list(response.tenants)

    async def rotate_key(self, tenant_id: str) -> admin_pb2.RotateTenantKeyResponse:
        return await self.stub.RotateTenantKey(
            admin_pb2.RotateTenantKeyRequest(tenant_id=tenant_id), metadata=self.metadata, timeout=30
        )

    async def disable(self, tenant_id: str, enable: bool = False) -> admin_pb2.Tenant:
        response = await self.stub.DisableTenant(
            admin_pb2.DisableTenantRequest(tenant_id=tenant_id, enable=enable), metadata=self.metadata, timeout=30
        )
        return response.tenant

    async def update(self, tenant_id: str, **settings) -> admin_pb2.Tenant:
        """Settings by UpdateTenantRequest field name (e.g. max_subjects_per_day=5, add_cert_identities=[...])."""
        response = await self.stub.UpdateTenant(
            admin_pb2.UpdateTenantRequest(tenant_id=tenant_id, **settings), metadata=self.metadata, timeout=30
        )
        return response.tenant
