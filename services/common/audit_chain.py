"""The vault's audit log as a hash chain with signed checkpoints, and its offline verification.

Each entry commits to the previous entry's hash, so an edited, deleted or reordered entry breaks
every hash after it; checkpoints signed by the vault pin the chain's head at intervals, so the log
cannot be rewritten wholesale (nor cut short before the last checkpoint) without the signing key.
Export format (JSON lines): {"type": "entry", ...} and {"type": "checkpoint", ...} records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common.signatures import CHECKPOINT_TYPE, SignatureError, verify_checkpoint

GENESIS_HASH = "0" * 64
ENTRY_FIELDS = ("service", "action", "tenant_id", "subject_id", "purpose", "outcome", "detail")


def entry_hash(prev_hash: str, seq: int, at: str, fields: dict[str, str]) -> str:
    values = [seq, at, *(fields.get(name, "") for name in ENTRY_FIELDS[:-1])]
    if fields.get("detail"):  # entries without detail hash as they did before detail existed
        values.append(fields["detail"])
    canonical = json.dumps(values, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


def entry_record(seq: int, at: str, fields: dict[str, str], prev_hash: str, hash_: str) -> dict:
    return {"type": "entry", "seq": seq, "at": at, **{name: fields.get(name, "") for name in ENTRY_FIELDS},
            "prev_hash": prev_hash, "hash": hash_}


def checkpoint_body(seq: int, hash_: str, at: str) -> dict:
    return {"type": CHECKPOINT_TYPE, "seq": seq, "hash": hash_, "at": at}


@dataclass
class ChainVerdict:
    ok: bool
    entries: int
    checkpoints: int
    first_broken_seq: int | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class _Broken(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq, self.reason = seq, reason


def verify_records(records: Iterable[dict], public_key: Ed25519PublicKey) -> ChainVerdict:
    """Walk the records in order; name the first entry at which the chain or a checkpoint breaks."""
    hashes: dict[int, str] = {}
    checkpoints: list[dict] = []
    expected_seq, expected_prev = 1, GENESIS_HASH
    try:
        for record in records:
            if record.get("type") == CHECKPOINT_TYPE:
                checkpoints.append(record)
                continue
            _check_entry(record, expected_seq, expected_prev)
            hashes[expected_seq] = expected_prev = record["hash"]
            expected_seq += 1
        for checkpoint in checkpoints:
            _check_checkpoint(checkpoint, hashes, expected_seq, public_key)
    except _Broken as broken:
        return ChainVerdict(False, len(hashes), len(checkpoints), broken.seq, broken.reason)
    return ChainVerdict(True, len(hashes), len(checkpoints))


def _check_entry(record: dict, expected_seq: int, expected_prev: str) -> None:
    seq = record.get("seq")
    if seq != expected_seq:
        raise _Broken(expected_seq, f"entry {expected_seq} is missing or out of order (found {seq})")
    if record.get("prev_hash") != expected_prev:
        raise _Broken(expected_seq, f"entry {expected_seq} does not follow the entry before it")
    fields = {name: str(record.get(name, "")) for name in ENTRY_FIELDS}
    if entry_hash(expected_prev, expected_seq, str(record.get("at", "")), fields) != record.get("hash"):
        raise _Broken(expected_seq, f"entry {expected_seq} was altered (its hash does not match its content)")


def _check_checkpoint(
    checkpoint: dict, hashes: dict[int, str], next_seq: int, public_key: Ed25519PublicKey
) -> None:
    seq = checkpoint.get("seq")
    if not isinstance(seq, int) or seq < 1:
        raise _Broken(next_seq, "a checkpoint is malformed")
    try:
        verify_checkpoint(checkpoint, public_key)
    except SignatureError as error:
        raise _Broken(seq, f"checkpoint at entry {seq}: {error}") from None
    if seq >= next_seq:
        raise _Broken(next_seq, f"entries {next_seq}..{seq} were removed (a signed checkpoint covers them)")
    if hashes[seq] != checkpoint.get("hash"):
        raise _Broken(seq, f"entry {seq} differs from the signed checkpoint")


def parse_export(lines: Iterable[str]) -> list[dict]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise ValueError(f"line {number} of the audit export is not JSON") from None
    return records
