"""Reading the vault's audit log for an export or a verification, however long it has grown.

The reader has a sqlite connection of its own (read-only; the store is in WAL mode, so it reads while the vault
writes) and reads a page of entries at a time by sequence number, in short read transactions: the
vault's lock is never taken, so key requests and appends go on during an export, and no long-lived snapshot
keeps a shredded key's old page from being checkpointed out of the WAL. Entries are append-only and an
export stops at the head it was asked for, so pages read at different moments still join into one exact chain.
Memory stays at one page whatever the log's length."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from studio.v1 import privacy_pb2

from services.common.audit_chain import ChainVerdict, verify_stream
from services.privacy import audit_log

PAGE_ENTRIES = 500  # ~0.6 MB of records in memory at a time (about 1.2 KB per entry as dicts)
MAX_BATCH = 1000  # records per ExportAudit reply, at most
REPLY_BYTES = 1 << 20  # and a reply is cut past 1 MiB: far below gRPC's 4 MiB message limit


class AuditReader:
    def __init__(self, path: Path, page_entries: int = PAGE_ENTRIES) -> None:
        self.page_entries = page_entries
        # Used from one worker thread at a time, not always the same one (asyncio.to_thread).
        self._db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None)

    def close(self) -> None:
        self._db.close()

    def head(self) -> int:
        return audit_log.head(self._db)

    def page(self, after: int, through: int) -> tuple[list[dict], int]:
        return audit_log.page(self._db, after, through, self.page_entries)

    def records(self, through: int) -> Iterator[dict]:
        after = 0
        while after < through:
            records, after = self.page(after, through)
            yield from records


class AuditExport:
    """The records of entries 1..head and the checkpoints that pin them, in export order, fetched a page at a time
    as they are consumed (a slow consumer holds one page, and no lock)."""

    def __init__(self, path: Path, head: int, page_entries: int = PAGE_ENTRIES) -> None:
        self.path, self.head, self.page_entries = Path(path), head, page_entries

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._records()

    async def _records(self) -> AsyncIterator[dict]:
        reader = await asyncio.to_thread(AuditReader, self.path, self.page_entries)
        try:
            after = 0
            while after < self.head:
                records, after = await asyncio.to_thread(reader.page, after, self.head)
                for record in records:
                    yield record
        finally:
            reader.close()


async def export_replies(export: AuditExport, batch: int) -> AsyncIterator[privacy_pb2.ExportAuditResponse]:
    """ExportAudit's replies: one record each in `json` (batch 0, as callers before batches ask), or up to
    `batch` records each in `records` (capped at MAX_BATCH, and cut at REPLY_BYTES)."""
    limit, lines, size = min(batch, MAX_BATCH), [], 0
    async with contextlib.aclosing(aiter(export)) as records:
        async for record in records:
            line = json.dumps(record, sort_keys=True)
            if not limit:
                yield privacy_pb2.ExportAuditResponse(json=line)
                continue
            lines.append(line)
            size += len(line)
            if len(lines) >= limit or size >= REPLY_BYTES:
                yield privacy_pb2.ExportAuditResponse(records=lines)
                lines, size = [], 0
    if lines:
        yield privacy_pb2.ExportAuditResponse(records=lines)


def verify_store(path: Path, public_key: Ed25519PublicKey, page_entries: int = PAGE_ENTRIES) -> ChainVerdict:
    """The chain up to the current head, checked a page at a time (blocking: call it from a worker thread)."""
    reader = AuditReader(path, page_entries)
    try:
        through = reader.head()
        return verify_stream(lambda: reader.records(through), public_key)
    finally:
        reader.close()
