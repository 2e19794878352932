"""Purge confirmation times a store written by an older vault may hold and no certificate can state.

Before the vault checked a confirmation's time on receipt (deletion_records.plausible), it stored the
service's claim as it came: a time outside the calendar (which neither the certificate's ISO dates nor a
protobuf Timestamp can carry), or one before the request or far past its receipt. Such a deletion could
never be certified (signing its certificate failed on every retry) nor its status read. When the vault
opens its store, each such time is replaced with the time of the repair (the confirmation was received
by then, so the certificate states no destruction earlier than it can vouch for) and the repair is
audited. A certified deletion keeps every time its certificate states, unless the time is unreadable."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from services.privacy.audit_log import AuditEntry
from services.privacy.certificate import iso
from services.privacy.deletion_records import MAX_CLOCK_SKEW_S
from services.privacy.store import Transaction

log = logging.getLogger(__name__)

# The seconds a protobuf Timestamp (and a datetime) can carry: 0001-01-01T00:00:00Z up to 10000-01-01.
CALENDAR_START_S = -62_135_596_800
CALENDAR_END_S = 253_402_300_800
# Unreadable (not a number, outside the calendar) anywhere; implausible where no certificate was issued yet.
FIND = """
SELECT c.deletion_id, c.service, c.confirmed_at, d.tenant_id, d.subject_id
FROM purge_confirmations c JOIN deletions d ON d.deletion_id = c.deletion_id
WHERE typeof(c.confirmed_at) NOT IN ('integer', 'real')
   OR NOT (c.confirmed_at >= :start AND c.confirmed_at < :end)
   OR (d.certificate IS NULL AND NOT (c.confirmed_at BETWEEN d.requested_at - :skew AND :now + :skew))
"""


@dataclass(frozen=True)
class Repair:
    deletion_id: str
    service: str
    tenant_id: str
    subject_id: str
    stored: object
    repaired_at: float

    def audit_entry(self) -> AuditEntry:
        detail = {"deletion_id": self.deletion_id, "service": self.service,
                  "stored_confirmed_at": _shown(self.stored), "confirmed_at": iso(self.repaired_at)}
        return AuditEntry("privacy", "ConfirmationTimeRepaired", self.tenant_id, self.subject_id, "", "REPAIRED",
                          json.dumps(detail, sort_keys=True))


def repair_confirmation_times(
    db: sqlite3.Connection, now: float, audit: Callable[[AuditEntry], object]
) -> list[Repair]:
    """Replace every stored confirmation time no certificate can state with `now`, each with its audit
    entry, in one transaction (on the vault's connection, before it serves)."""
    with Transaction(db):
        rows = db.execute(FIND, {"start": CALENDAR_START_S, "end": CALENDAR_END_S, "skew": MAX_CLOCK_SKEW_S,
                                 "now": now}).fetchall()
        repairs = [Repair(deletion_id, service, tenant_id, subject_id, stored, now)
                   for deletion_id, service, stored, tenant_id, subject_id in rows]
        for repair in repairs:
            db.execute("UPDATE purge_confirmations SET confirmed_at = ? WHERE deletion_id = ? AND service = ?",
                       (now, repair.deletion_id, repair.service))
            audit(repair.audit_entry())
            log.warning("deletion %s: %s's stored confirmation time %s replaced with %s", repair.deletion_id,
                        repair.service, _shown(repair.stored), iso(now))
    return repairs


def _shown(stored: object) -> float | str:
    """The stored value for the audit log: a finite number as it is, anything else briefly described."""
    if isinstance(stored, int | float) and math.isfinite(stored):
        return stored
    return repr(stored)[:40]
