"""Who may do what with the vault: the single place that grants key purposes to services."""

from __future__ import annotations

import time
from dataclasses import dataclass

from studio.v1 import common_pb2, privacy_pb2

Purpose = privacy_pb2.KeyPurpose
Scope = common_pb2.ConsentScope
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class ServicePolicy:
    key_purposes: frozenset[int]
    may_register_subjects: bool = False
    may_read_consent: bool = True
    # Start deletions and revocations for a tenant, and read their status and certificates.
    may_manage_deletions: bool = False
    # Operator actions: rotate the master key, export the audit log.
    may_administer: bool = False
    # Read one subject's audit entries (for that subject's export, right of access).
    may_read_subject_audit: bool = False
    # Sign C2PA provenance manifests with the studio's key (and derive order references).
    may_sign_provenance: bool = False


# Each service may only read what it consumes and only seal what it produces.
POLICY: dict[str, ServicePolicy] = {
    "ingest": ServicePolicy(
        frozenset({Purpose.KEY_PURPOSE_ENCRYPT_UPLOAD, Purpose.KEY_PURPOSE_DECRYPT_PORTRAIT,
                   Purpose.KEY_PURPOSE_EXPORT_SUBJECT}),
        may_register_subjects=True,
        may_manage_deletions=True,
        may_read_subject_audit=True,
    ),
    "faceqa": ServicePolicy(frozenset({Purpose.KEY_PURPOSE_DECRYPT_PHOTO, Purpose.KEY_PURPOSE_ENCRYPT_CROP})),
    "trainer": ServicePolicy(frozenset({
        Purpose.KEY_PURPOSE_DECRYPT_CROP, Purpose.KEY_PURPOSE_ENCRYPT_LORA, Purpose.KEY_PURPOSE_TRAINER_CHECKPOINT,
    })),
    # Crops: the reference identity the renderer ranks its candidates against.
    "renderer": ServicePolicy(
        frozenset({
            Purpose.KEY_PURPOSE_DECRYPT_LORA, Purpose.KEY_PURPOSE_ENCRYPT_PORTRAIT, Purpose.KEY_PURPOSE_DECRYPT_CROP,
        }),
        may_sign_provenance=True,
    ),
    # The operator's CLI: no data key, no consent, ever.
    "operator": ServicePolicy(frozenset(), may_read_consent=False, may_administer=True),
}

# Every purpose serves portrait generation; there is deliberately no other scope to ask for.
REQUIRED_SCOPES: dict[int, frozenset[int]] = {
    purpose: frozenset({Scope.CONSENT_SCOPE_PORTRAIT_GENERATION})
    for purpose in Purpose.values()
    if purpose != Purpose.KEY_PURPOSE_UNSPECIFIED
}


def purpose_allowed(service: str, purpose: int) -> bool:
    policy = POLICY.get(service)
    return policy is not None and purpose in policy.key_purposes


def _flag(service: str, name: str) -> bool:
    policy = POLICY.get(service)
    return policy is not None and bool(getattr(policy, name))


def may_register_subjects(service: str) -> bool:
    return _flag(service, "may_register_subjects")


def may_read_consent(service: str) -> bool:
    return _flag(service, "may_read_consent")


def may_manage_deletions(service: str) -> bool:
    return _flag(service, "may_manage_deletions")


def may_administer(service: str) -> bool:
    return _flag(service, "may_administer")


def may_read_subject_audit(service: str) -> bool:
    return _flag(service, "may_read_subject_audit")
def may_sign_provenance(service: str) -> bool:
    return _flag(service, "may_sign_provenance")


def purpose_name(purpose: int) -> str:
    try:
        return Purpose.Name(purpose)
    except ValueError:
        return f"KEY_PURPOSE_{purpose}"


def consent_shortfall(
    consent: common_pb2.ConsentRecord, purpose: int, now: float | None = None
) -> str | None:
    """Why the consent does not cover the purpose, or None when it does."""
    required = REQUIRED_SCOPES.get(purpose)
    if required is None:
        return f"no consent scope is defined for {purpose_name(purpose)}"
    missing = required - set(consent.scopes)
    if missing:
        return f"consent lacks scope {', '.join(sorted(Scope.Name(scope) for scope in missing))}"
    if consent.HasField("granted_at") and consent.retention_days:
        expires_at = consent.granted_at.seconds + consent.retention_days * SECONDS_PER_DAY
        if (time.time() if now is None else now) >= expires_at:
            return "consent retention period has ended"
    return None
