"""The vault's sqlite file: created private, transactions on its autocommit connection, and what an
existing store holds (read before the master and signing keys are opened, so a lost key file is
refused rather than silently replaced)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreHoldings:
    wrapped_keys: int
    signed_documents: int


def stored_holdings(path: Path) -> StoreHoldings:
    """How many wrapped data keys and signed documents (checkpoints, certificates) the store holds;
    none for a store that does not exist yet."""
    if not Path(path).exists():
        return StoreHoldings(0, 0)
    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return StoreHoldings(
            _count(db, tables, "subjects", ""),
            _count(db, tables, "audit_checkpoints", "")
            + _count(db, tables, "deletions", "WHERE certificate IS NOT NULL"),
        )
    finally:
        db.close()


def _count(db: sqlite3.Connection, tables: set[str], table: str, where: str) -> int:
    if table not in tables:
        return 0
    return db.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0]


def create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


class StorageFull(Exception):
    """The store cannot grow (SQLITE_FULL: its volume is full, or the file is at its size limit). Nothing was
    written; the vault refuses what it cannot audit until the operator makes room (docs/operations.md)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"the vault's storage is full: its store {path} cannot grow (database or disk is full);"
                         " every request that needs an audit entry is refused until the volume has room")
        self.path = path


def is_storage_full(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.Error) and code is not None and code & 0xFF == sqlite3.SQLITE_FULL


class Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK on an autocommit connection (the caller holds the lock)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type:
            self._rollback()
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:  # e.g. SQLITE_FULL writing the WAL: leave no transaction open behind
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # sqlite rolls back on its own after some errors (SQLITE_FULL among them)
            self._db.execute("ROLLBACK")
