"""Tenant accounts: stored by tenant id, indexed by API key hash and by mTLS certificate identity.

Only hashes of API keys are stored. The account is authoritative: an index entry left behind by a
rotation or a disabled account never authenticates."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable

from studio.v1 import state_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.secrets import hash_api_key

# Tenant ids appear in NATS subjects and object keys: one token, no dots or wildcards.
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CAS_ATTEMPTS = 16


class InvalidTenant(ValueError):
    pass


class IdentityTaken(Exception):
    """A certificate identity another tenant holds."""

    def __init__(self, identity: str) -> None:
        super().__init__(f"certificate identity {identity!r} belongs to another tenant")
        self.identity = identity


def new_api_key() -> str:
    return f"sk_{secrets.token_urlsafe(32)}"


def cert_index_key(identity: str) -> str:
    return f"cert.{hashlib.sha256(identity.encode()).hexdigest()}"


def name_index_key(name: str) -> str:
    return f"name.{hashlib.sha256(name.encode()).hexdigest()}"


async def claim_name(bus: Bus, name: str, tenant_id: str) -> bool:
    """Reserve a tenant name for `tenant_id`; False when another tenant holds it (two creations at once)."""
    return await bus.kv_create(topology.TENANTS_BUCKET, name_index_key(name), tenant_id.encode())


async def release_name(bus: Bus, name: str) -> None:
    await bus.kv_purge(topology.TENANTS_BUCKET, name_index_key(name))


async def claim_cert_identities(bus: Bus, account: state_pb2.TenantRecord) -> list[str]:
    """Reserve each of the account's certificate identities for it. Index entries are created only if absent, so
    two tenants given one identity at once cannot both get it. The identities this call claimed (to release if the
    account is not written after all); raises IdentityTaken, having released them."""
    claimed: list[str] = []
    try:
        for identity in account.cert_identities:
            key = cert_index_key(identity)
            if await bus.kv_create(topology.TENANTS_BUCKET, key, account.SerializeToString()):
                claimed.append(identity)
                continue
            owner = await bus.kv_get(topology.TENANTS_BUCKET, key, state_pb2.TenantRecord)
            if owner is None or owner.tenant_id != account.tenant_id:
                raise IdentityTaken(identity)
    except BaseException:
        await release_cert_identities(bus, claimed)
        raise
    return claimed


async def release_cert_identities(bus: Bus, identities: list[str]) -> None:
    for identity in identities:
        await bus.kv_purge(topology.TENANTS_BUCKET, cert_index_key(identity))


def check_tenant_id(tenant_id: str) -> None:
    if not TENANT_ID_PATTERN.match(tenant_id):
        raise InvalidTenant(f"tenant id {tenant_id!r} must be 1-64 letters, digits, '_' or '-'")


async def load_account(bus: Bus, tenant_id: str) -> state_pb2.TenantRecord | None:
    if not TENANT_ID_PATTERN.match(tenant_id):
        return None
    return await bus.kv_get(topology.TENANT_ACCOUNTS_BUCKET, tenant_id, state_pb2.TenantRecord)


async def list_accounts(bus: Bus) -> list[state_pb2.TenantRecord]:
    accounts = []
    for tenant_id in sorted(await bus.kv_keys(topology.TENANT_ACCOUNTS_BUCKET)):
        account = await load_account(bus, tenant_id)
        if account is not None:
            accounts.append(account)
    return accounts


async def save_account(bus: Bus, account: state_pb2.TenantRecord, previous: state_pb2.TenantRecord | None) -> None:
    """Write the account, then its index entries; drop index entries the account no longer has."""
    check_tenant_id(account.tenant_id)
    await bus.kv_put(topology.TENANT_ACCOUNTS_BUCKET, account.tenant_id, account)
    await _index(bus, account, previous)


Change = Callable[[state_pb2.TenantRecord], Awaitable[None]]


async def update_account(bus: Bus, tenant_id: str, change: Change) -> state_pb2.TenantRecord | None:
    """Apply `change` to the stored account and write it back only if no other call wrote it meanwhile (else read
    and apply again): a key rotation and a settings update at once must not write back the revoked key. The
    account as written; None when there is no such tenant."""
    if not TENANT_ID_PATTERN.match(tenant_id):
        return None
    for _ in range(CAS_ATTEMPTS):
        raw, revision = await bus.kv_entry(topology.TENANT_ACCOUNTS_BUCKET, tenant_id)
        if raw is None:
            return None
        previous = state_pb2.TenantRecord.FromString(raw)
        account = state_pb2.TenantRecord()
        account.CopyFrom(previous)
        await change(account)
        if await bus.kv_compare_and_set(topology.TENANT_ACCOUNTS_BUCKET, tenant_id, account.SerializeToString(),
                                        revision):
            await _index(bus, account, previous)
            return account
    raise RuntimeError(f"tenant {tenant_id} is contended")


async def _index(bus: Bus, account: state_pb2.TenantRecord, previous: state_pb2.TenantRecord | None) -> None:
    """Index entries may lag or outlive the account: authenticate() trusts the account alone."""
    await bus.kv_put(topology.TENANTS_BUCKET, account.api_key_hash, account)
    for identity in account.cert_identities:
        await bus.kv_put(topology.TENANTS_BUCKET, cert_index_key(identity), account)
    if previous is None:
        return
    if previous.api_key_hash and previous.api_key_hash != account.api_key_hash:
        await bus.kv_purge(topology.TENANTS_BUCKET, previous.api_key_hash)
    for identity in set(previous.cert_identities) - set(account.cert_identities):
        await bus.kv_purge(topology.TENANTS_BUCKET, cert_index_key(identity))


async def authenticate(bus: Bus, *, api_key: str = "", cert_identity: str = "") -> state_pb2.TenantRecord | None:
    """The enabled tenant that this API key or certificate identity belongs to, else None."""
    index_key = cert_index_key(cert_identity) if cert_identity else hash_api_key(api_key)
    indexed = await bus.kv_get(topology.TENANTS_BUCKET, index_key, state_pb2.TenantRecord)
    if indexed is None:
        return None
    account = await load_account(bus, indexed.tenant_id) or indexed
    if account.disabled:
        return None
    if cert_identity:
        return account if cert_identity in account.cert_identities else None
    return account if account.api_key_hash == index_key else None


async def ensure_tenant(bus: Bus, tenant_id: str, name: str, api_key: str, min_accepted_photos: int = 0) -> None:
    """Register (or re-register) a tenant's API key, keeping any settings the operator gave it; used for
    the embedded stack's default tenant and by tests."""
    previous = await load_account(bus, tenant_id)
    account = state_pb2.TenantRecord()
    if previous is not None:
        account.CopyFrom(previous)
    else:
        account.created_at.GetCurrentTime()
    account.tenant_id, account.name, account.api_key_hash = tenant_id, name, hash_api_key(api_key)
    if min_accepted_photos:
        account.min_accepted_photos = min_accepted_photos
    await save_account(bus, account, previous)
