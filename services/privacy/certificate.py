"""Deletion certificates: what was destroyed, by which service, when; signed by the vault (Ed25519).

`studio certificate verify FILE` checks one offline with the vault's public key."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from studio.v1 import privacy_pb2

from services.common.signatures import CERTIFICATE_TYPE, SigningKey
from services.privacy.deletion_records import DeletionRecord

# What the vault itself destroys when it shreds a subject.
VAULT_DESTROYED = {"data_keys": 1, "wrapped_key_copies": 1, "consent_records": 1}


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def certificate_bytes(record: DeletionRecord, issued_at: float, signer: SigningKey) -> bytes:
    document = {
        "type": CERTIFICATE_TYPE,
        "certificate_id": f"cert_{record.deletion_id}",
        "deletion_id": record.deletion_id,
        "tenant_id": record.tenant_id,
        "subject_id": record.subject_id,
        "reason": privacy_pb2.DeletionReason.Name(record.reason),
        "requested_at": iso(record.requested_at),
        "destroyed": [
            {"service": "privacy", "at": iso(record.key_shredded_at), "items": VAULT_DESTROYED},
            *({"service": c.service, "at": iso(c.confirmed_at), "items": c.destroyed}
              for c in record.confirmations),
        ],
        "issued_at": iso(issued_at),
        "issuer": "portrait-studio privacy vault",
    }
    return json.dumps(signer.sign(document), indent=2, sort_keys=True).encode() + b"\n"


def _timestamp(epoch_s: float | None) -> Timestamp | None:
    if epoch_s is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(epoch_s * 1e9))
    return stamp


def deletion_proto(record: DeletionRecord) -> privacy_pb2.Deletion:
    deletion = privacy_pb2.Deletion(
        deletion_id=record.deletion_id, tenant_id=record.tenant_id, subject_id=record.subject_id,
        reason=record.reason, waiting_for=record.waiting_for,
        state=privacy_pb2.DELETION_STATE_CERTIFIED if record.certificate else privacy_pb2.DELETION_STATE_PURGING,
        requested_at=_timestamp(record.requested_at), key_shredded_at=_timestamp(record.key_shredded_at),
        certificate=record.certificate or b"",
    )
    if record.certified_at is not None:
        deletion.certified_at.CopyFrom(_timestamp(record.certified_at))
    for confirmation in record.confirmations:
        deletion.confirmations.add(
            service=confirmation.service, confirmed_at=_timestamp(confirmation.confirmed_at),
            destroyed=confirmation.destroyed,
        )
    return deletion
