"""A consent record's terms as the vault keeps them: its grant time, its expiry, and whether a repeated
registration asks for the same consent."""

from __future__ import annotations

from studio.v1 import common_pb2

SECONDS_PER_DAY = 86_400


def stamped(consent: common_pb2.ConsentRecord, now: float) -> common_pb2.ConsentRecord:
    """The consent with its grant time: the registration's own time where the caller named none."""
    if consent.HasField("granted_at"):
        return consent
    with_grant = common_pb2.ConsentRecord()
    with_grant.CopyFrom(consent)
    with_grant.granted_at.FromNanoseconds(int(now * 1e9))
    return with_grant


def same(stored: common_pb2.ConsentRecord, requested: common_pb2.ConsentRecord) -> bool:
    """Whether a repeated registration asks for the recorded consent. A repeat that names no grant time
    asks for none in particular (the first registration's own time was recorded)."""
    same_grant = not requested.HasField("granted_at") or requested.granted_at == stored.granted_at
    return _terms(stored) == _terms(requested) and same_grant


def expires_at(consent: common_pb2.ConsentRecord) -> float | None:
    """When retention ends (a stamped consent: its grant time is set)."""
    if not consent.retention_days:
        return None
    return consent.granted_at.seconds + consent.retention_days * SECONDS_PER_DAY


def _terms(consent: common_pb2.ConsentRecord) -> tuple:
    return consent.agreement_version, sorted(set(consent.scopes)), consent.retention_days
