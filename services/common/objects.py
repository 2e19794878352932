"""Object-store key layout and resource ids. Every object lives under its tenant and subject,
so purging a subject is one prefix delete."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def subject_prefix(tenant_id: str, subject_id: str) -> str:
    return f"tenants/{tenant_id}/subjects/{subject_id}/"


def photo_key(tenant_id: str, subject_id: str, photo_id: str) -> str:
    return f"{subject_prefix(tenant_id, subject_id)}photos/{photo_id}"


def crop_key(tenant_id: str, subject_id: str, photo_id: str) -> str:
    return f"{subject_prefix(tenant_id, subject_id)}crops/{photo_id}.png"


def lora_key(tenant_id: str, subject_id: str, base_model_id: str) -> str:
    return f"{subject_prefix(tenant_id, subject_id)}loras/{base_model_id}.safetensors"


def portrait_key(tenant_id: str, subject_id: str, order_id: str, portrait_id: str) -> str:
    return f"{subject_prefix(tenant_id, subject_id)}orders/{order_id}/portraits/{portrait_id}.png"


def subject_area(tenant_id: str, subject_id: str, area: str) -> str:
    """One kind of a subject's objects: photos/, crops/, loras/, checkpoints/ or orders/ (portraits)."""
    return f"{subject_prefix(tenant_id, subject_id)}{area}/"
