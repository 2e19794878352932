"""The vault's audit log as a hash chain with signed checkpoints, and its offline verification.

Each entry commits to the previous entry's hash, so an edited, deleted or reordered entry breaks
every hash after it; checkpoints signed by the vault pin the chain's head at intervals, so the log
cannot be rewritten wholesale (nor cut short before the last checkpoint) without the signing key.
Export format (JSON lines): {"type": "entry", ...} and {"type": "checkpoint", ...} records, entries by
sequence number, each checkpoint right after the entry it pins (older exports put them all last; both verify),
so an export of any length verifies in one pass in constant memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Iterator
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


class ChainWalk:
    """One pass over an export's records in constant memory: each entry is checked against the one before
    it, and each checkpoint against the entry it pins as soon as both have been read (the vault writes a
    checkpoint right after its entry). A checkpoint read after later entries (older exports put every
    checkpoint last) is kept in `behind`, for a second pass to check; a checkpoint read before its entry
    waits for it, and one whose entry never comes means entries were cut off."""

    def __init__(self, public_key: Ed25519PublicKey, pinned: dict[int, str] | None = None) -> None:
        self._key = public_key
        self._ahead: dict[int, str] = dict(pinned or {})  # seq -> the hash a checkpoint pins, entry not read yet
        self.behind: dict[int, str] = {}
        self.next_seq, self.last_hash, self.checkpoints = 1, GENESIS_HASH, 0
        self.skip_checkpoints = pinned is not None  # a second pass: checkpoints were checked in the first
        self._broken: _Broken | None = None

    def walk(self, records: Iterable[dict]) -> ChainVerdict:
        for record in records:
            if not self.feed(record):
                break
        return self.verdict()

    def feed(self, record: dict) -> bool:
        """Check one more record; False once the chain is broken (what follows need not be read)."""
        if self._broken is None:
            try:
                self._add(record)
            except _Broken as broken:
                self._broken = broken
        return self._broken is None

    def verdict(self) -> ChainVerdict:
        """After the last record: a checkpoint still waiting for its entry means the log was cut short."""
        if self._broken is None and self._ahead:
            self._broken = _Broken(self.next_seq, f"entries {self.next_seq}..{max(self._ahead)} were removed"
                                                  " (a signed checkpoint covers them)")
        if self._broken is None:
            return ChainVerdict(True, self.next_seq - 1, self.checkpoints)
        return ChainVerdict(False, self.next_seq - 1, self.checkpoints, self._broken.seq, self._broken.reason)

    def _add(self, record: dict) -> None:
        if record.get("type") == CHECKPOINT_TYPE:
            if not self.skip_checkpoints:
                self._checkpoint(record)
            return
        seq = self.next_seq
        _check_entry(record, seq, self.last_hash)
        self.last_hash = record["hash"]
        if self._ahead.pop(seq, self.last_hash) != self.last_hash:
            raise _Broken(seq, f"entry {seq} differs from the signed checkpoint")
        self.next_seq += 1

    def _checkpoint(self, checkpoint: dict) -> None:
        self.checkpoints += 1
        seq = checkpoint.get("seq")
        if not isinstance(seq, int) or seq < 1:
            raise _Broken(self.next_seq, "a checkpoint is malformed")
        try:
            verify_checkpoint(checkpoint, self._key)
        except SignatureError as error:
            raise _Broken(seq, f"checkpoint at entry {seq}: {error}") from None
        pinned, read = checkpoint.get("hash"), self.next_seq - 1
        if seq == read and pinned != self.last_hash and not self.behind:
            raise _Broken(seq, f"entry {seq} differs from the signed checkpoint")
        if seq != read or self.behind:  # behind: the second pass names the first of them that breaks
            waiting = self._ahead if seq > read else self.behind
            if waiting.setdefault(seq, pinned) != pinned:
                raise _Broken(seq, f"entry {seq} differs from a signed checkpoint")


def verify_stream(open_records: Callable[[], Iterable[dict]], public_key: Ed25519PublicKey) -> ChainVerdict:
    """Verify an export read through `open_records` (called again for a second pass only where checkpoints
    came after later entries, as in older exports; that pass holds one hash per such checkpoint)."""
    return verify_walks(lambda walk: walk.walk(open_records()), public_key)


def verify_walks(run: Callable[[ChainWalk], ChainVerdict], public_key: Ed25519PublicKey) -> ChainVerdict:
    """`run` feeds a walk every record of the export and returns its verdict; a second run, where needed
    (see verify_stream), checks the checkpoints the first read after later entries."""
    first = ChainWalk(public_key)
    verdict = run(first)
    if not verdict.ok or not first.behind:
        return verdict
    again = run(ChainWalk(public_key, pinned=first.behind))
    return dataclasses.replace(again, checkpoints=verdict.checkpoints)


def verify_records(records: Collection[dict], public_key: Ed25519PublicKey) -> ChainVerdict:
    """Walk the records in order; name the first entry at which the chain or a checkpoint breaks."""
    return verify_stream(lambda: records, public_key)


def _check_entry(record: dict, expected_seq: int, expected_prev: str) -> None:
    seq = record.get("seq")
    if seq != expected_seq:
        raise _Broken(expected_seq, f"entry {expected_seq} is missing or out of order (found {seq})")
    if record.get("prev_hash") != expected_prev:
        raise _Broken(expected_seq, f"entry {expected_seq} does not follow the entry before it")
    fields = {name: str(record.get(name, "")) for name in ENTRY_FIELDS}
    if entry_hash(expected_prev, expected_seq, str(record.get("at", "")), fields) != record.get("hash"):
        raise _Broken(expected_seq, f"entry {expected_seq} was altered (its hash does not match its content)")


def iter_export(lines: Iterable[str]) -> Iterator[dict]:
    """An export's records one at a time (JSON lines; blank lines skipped)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            raise ValueError(f"line {number} of the audit export is not JSON") from None


def parse_export(lines: Iterable[str]) -> list[dict]:
    return list(iter_export(lines))
