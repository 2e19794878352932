"""TenantAdmin: the operator's tenant management, served by ingest beside the public API.

Callers present the operator token in `x-operator-token`; ingest holds only its SHA-256
(STUDIO_OPERATOR_TOKEN_HASH_FILE), so ingest itself can never act as the operator towards the vault.
Tenant API keys never authorise these calls. Without the hash file every call is PERMISSION_DENIED."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from studio.v1 import admin_pb2, admin_pb2_grpc, state_pb2

from services.common.bus import Bus
from services.common.objects import new_id
from services.common.secrets import constant_time_equal, hash_api_key
from services.ingest import fields, tenants
from services.ingest.create_subject import MAX_RETENTION_DAYS
from services.ingest.quotas import effective_quotas

MAX_PHOTO_AGE_DAYS = 36500
MAX_LABEL_CHARS = 64
MAX_CERT_IDENTITIES = 32
MAX_CERT_IDENTITY_CHARS = 256

OPERATOR_TOKEN_METADATA = "x-operator-token"
OPERATOR_TOKEN_HASH_ENV = "STUDIO_OPERATOR_TOKEN_HASH_FILE"
QUOTA_FIELDS = [field.name for field in admin_pb2.TenantQuotas.DESCRIPTOR.fields]


def operator_token_hash_from_env() -> str:
    path = os.environ.get(OPERATOR_TOKEN_HASH_ENV)
    return Path(path).read_text().strip() if path else ""


def public_tenant(account: state_pb2.TenantRecord) -> admin_pb2.Tenant:
    return admin_pb2.Tenant(
        tenant_id=account.tenant_id, name=account.name, disabled=account.disabled,
        min_accepted_photos=account.min_accepted_photos, default_retention_days=account.default_retention_days,
        quotas=effective_quotas(account), cert_identities=account.cert_identities, created_at=account.created_at,
        max_photo_age_days=account.max_photo_age_days, visible_label=account.visible_label,
    )


class TenantAdminServicer(admin_pb2_grpc.TenantAdminServicer):
    def __init__(self, bus: Bus, operator_token_hash: str, default_min_accepted_photos: int = 0) -> None:
        self.bus = bus
        self._token_hash = operator_token_hash
        self._default_min_accepted = default_min_accepted_photos

    async def _authorise(self, context: grpc.aio.ServicerContext) -> None:
        if not self._token_hash:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "tenant administration is not enabled here")
        token = dict(context.invocation_metadata() or ()).get(OPERATOR_TOKEN_METADATA, "")
        if not token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing '{OPERATOR_TOKEN_METADATA}'")
        if not constant_time_equal(hash_api_key(token), self._token_hash):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not the operator")

    async def _updated(self, tenant_id: str, change: tenants.Change, context) -> state_pb2.TenantRecord:
        """The account after `change`, written back against concurrent admin calls."""
        account = await tenants.update_account(self.bus, tenant_id, change)
        if account is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"tenant '{fields.shown_id(tenant_id)}' not found")
        return account

    async def CreateTenant(self, request, context):
        await self._authorise(context)
        name = request.name.strip()
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        api_key = tenants.new_api_key()
        account = state_pb2.TenantRecord(
            tenant_id=new_id("tenant"), name=name, api_key_hash=hash_api_key(api_key),
            min_accepted_photos=request.min_accepted_photos, default_retention_days=request.default_retention_days,
            quotas=request.quotas, cert_identities=request.cert_identities,
            max_photo_age_days=request.max_photo_age_days,
        )
        await self._check_settings(account, context)
        # The listing covers tenants created before names were claimed; the claim, two creations at once.
        taken = any(other.name == name for other in await tenants.list_accounts(self.bus))
        if taken or not await tenants.claim_name(self.bus, name, account.tenant_id):
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"a tenant named {name!r} exists")
        account.created_at.GetCurrentTime()
        claimed: list[str] = []
        try:
            claimed = await self._claim_identities(account, context)
            await tenants.save_account(self.bus, account, None)
        except BaseException:
            await tenants.release_name(self.bus, name)
            await tenants.release_cert_identities(self.bus, claimed)
            raise
        return admin_pb2.CreateTenantResponse(tenant=public_tenant(account), api_key=api_key)

    async def ListTenants(self, request, context):
        await self._authorise(context)
        accounts = await tenants.list_accounts(self.bus)
        return admin_pb2.ListTenantsResponse(tenants=[public_tenant(account) for account in accounts])

    async def RotateTenantKey(self, request, context):
        await self._authorise(context)
        api_key = tenants.new_api_key()

        async def rotate(account: state_pb2.TenantRecord) -> None:
            account.api_key_hash = hash_api_key(api_key)

        account = await self._updated(request.tenant_id, rotate, context)
        return admin_pb2.RotateTenantKeyResponse(tenant=public_tenant(account), api_key=api_key)

    async def DisableTenant(self, request, context):
        await self._authorise(context)

        async def disable(account: state_pb2.TenantRecord) -> None:
            account.disabled = not request.enable

        account = await self._updated(request.tenant_id, disable, context)
        return admin_pb2.DisableTenantResponse(tenant=public_tenant(account))

    async def UpdateTenant(self, request, context):
        await self._authorise(context)

        claimed: list[str] = []

        async def update(account: state_pb2.TenantRecord) -> None:
            _apply_update(request, account)
            await self._check_settings(account, context)
            claimed.extend(await self._claim_identities(account, context))

        try:
            account = await self._updated(request.tenant_id, update, context)
        except BaseException:
            await tenants.release_cert_identities(self.bus, claimed)
            raise
        return admin_pb2.UpdateTenantResponse(tenant=public_tenant(account))

    async def _claim_identities(self, account: state_pb2.TenantRecord, context) -> list[str]:
        try:
            return await tenants.claim_cert_identities(self.bus, account)
        except tenants.IdentityTaken as taken:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(taken))

    async def _check_settings(self, account: state_pb2.TenantRecord, context) -> None:
        if account.max_photo_age_days > MAX_PHOTO_AGE_DAYS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"max_photo_age_days must be 0..{MAX_PHOTO_AGE_DAYS} (0: the default of 3 years)")
        if len(account.visible_label.text) > MAX_LABEL_CHARS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"visible label text is longer than {MAX_LABEL_CHARS} characters")
        if account.default_retention_days > MAX_RETENTION_DAYS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"default_retention_days must be 0..{MAX_RETENTION_DAYS} (0: the studio's default)")
        await self._check_photo_limits(account, context)
        await _check_identities(account, context)

    async def _check_photo_limits(self, account: state_pb2.TenantRecord, context) -> None:
        """A tenant whose subjects need more accepted photos than they may upload could never order."""
        needed = account.min_accepted_photos or self._default_min_accepted
        allowed = effective_quotas(account).max_photos_per_subject
        if needed > allowed:
            whose = "" if account.min_accepted_photos else " (the studio's default)"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"min_accepted_photos {needed}{whose} is more than max_photos_per_subject {allowed}: "
                                "no subject of this tenant could ever be trained")


async def _check_identities(account: state_pb2.TenantRecord, context) -> None:
    if len(account.cert_identities) > MAX_CERT_IDENTITIES:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"a tenant has at most {MAX_CERT_IDENTITIES} certificate identities")
    for identity in account.cert_identities:
        if not identity.strip() or len(identity) > MAX_CERT_IDENTITY_CHARS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a certificate identity must be 1-"
                                f"{MAX_CERT_IDENTITY_CHARS} characters, not blank: {identity[:64]!r}")


def _apply_update(request: admin_pb2.UpdateTenantRequest, account: state_pb2.TenantRecord) -> None:
    if request.HasField("visible_label"):
        account.visible_label.CopyFrom(request.visible_label)
    for name in ("min_accepted_photos", "default_retention_days", "max_photo_age_days"):
        if request.HasField(name):
            setattr(account, name, getattr(request, name))
    for name in QUOTA_FIELDS:
        if request.HasField(name):
            setattr(account.quotas, name, getattr(request, name))
    identities = [i for i in account.cert_identities if i not in request.remove_cert_identities]
    identities += [i for i in request.add_cert_identities if i not in identities]
    del account.cert_identities[:]
    account.cert_identities.extend(identities)
