"""What the vault's operations take and return, and the errors they raise (vault.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.privacy.audit_log import AuditEntry


class VaultError(Exception):
    pass


class SubjectNotFound(VaultError):
    """Unknown subject, or a subject of another tenant (callers must not be able to tell which)."""


class SubjectIdTaken(VaultError):
    """The subject id is already registered under another tenant."""


class ConsentConflict(VaultError):
    """The subject is already registered, with other consent terms than a repeated registration asks for."""


class RotationUnderWay(VaultError):
    """A master key rotation is already running; rotations run one at a time."""


@dataclass(frozen=True)
class DataKey:
    key: bytes = field(repr=False)
    key_id: str
    key_version: int


@dataclass(frozen=True)
class Registration:
    key_id: str
    key_version: int
    created: bool


@dataclass(frozen=True)
class Rotation:
    new_version: int
    rewrapped: int
    retired_versions: list[int]


@dataclass(frozen=True)
class ShredRequest:
    tenant_id: str
    subject_id: str
    reason: int
    requested_by: str
    expected_services: tuple[str, ...]
    extra_audit: tuple[AuditEntry, ...] = field(default=())
