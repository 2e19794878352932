"""A request's checks before the vault acts on it, and the refusals the Privacy API answers with."""

from __future__ import annotations

import grpc
from studio.v1 import common_pb2, privacy_pb2

MAX_RETENTION_DAYS = 3650
# Sent to the caller on a full store (the path and the error are in the vault's log, not in the reply).
STORAGE_FULL_REASON = (
    "the vault's storage is full (its SQLite store on the studio-vault volume cannot grow): the vault refuses"
    " what it cannot audit; an operator must give the volume room (docs/operations.md, 'The vault's volume')"
)


class Denied(Exception):
    """A decision against the caller: its status code, the reason sent back, and the audit outcome."""

    def __init__(self, code: grpc.StatusCode, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.outcome = code, reason, outcome


def require_ids(tenant_id: str, subject_id: str) -> None:
    if not tenant_id or not subject_id:
        raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "tenant_id and subject_id are required", "INVALID_ARGUMENT")


def validated_consent(request: privacy_pb2.RegisterSubjectRequest) -> common_pb2.ConsentRecord:
    if not request.HasField("consent"):
        raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "consent is required", "INVALID_ARGUMENT")
    consent = common_pb2.ConsentRecord()
    consent.CopyFrom(request.consent)
    if not consent.agreement_version:
        raise Denied(grpc.StatusCode.INVALID_ARGUMENT, "consent.agreement_version is required", "INVALID_ARGUMENT")
    if common_pb2.CONSENT_SCOPE_PORTRAIT_GENERATION not in consent.scopes:
        raise Denied(grpc.StatusCode.FAILED_PRECONDITION,
                     "consent does not include CONSENT_SCOPE_PORTRAIT_GENERATION", "DENIED_CONSENT")
    if not 1 <= consent.retention_days <= MAX_RETENTION_DAYS:
        raise Denied(grpc.StatusCode.INVALID_ARGUMENT,
                     f"consent.retention_days must be 1..{MAX_RETENTION_DAYS}", "INVALID_ARGUMENT")
    return consent
