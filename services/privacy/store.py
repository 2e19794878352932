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


class Transaction:
    """BEGIN IMMEDIATE … COMMIT/ROLLBACK on an autocommit connection (the caller holds the lock)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
