"""The embedded stack's secrets: a vault signing key lost from a data directory whose vault holds documents it signed
is refused, not replaced (the documents would no longer verify)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.cli.stack import EmbeddedStack
from services.common.signatures import SignatureError
from services.privacy.audit_log import SCHEMA as AUDIT_SCHEMA
from services.privacy.vault import vault_path


def test_a_lost_signing_key_is_refused_where_the_vault_signed_with_it(tmp_path: Path) -> None:
    fresh = EmbeddedStack(tmp_path / "fresh")
    fresh.paths.secrets.mkdir(parents=True)
    fresh._prepare_secrets()  # nothing signed yet: a key is made
    assert fresh.paths.signing_key_file.exists()

    used = EmbeddedStack(tmp_path / "used")
    used.paths.secrets.mkdir(parents=True)
    store = vault_path(used.data_dir)
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as db:
        db.executescript(AUDIT_SCHEMA)
        db.execute("INSERT INTO audit_checkpoints (seq, document) VALUES (1, '{}')")
    with pytest.raises(SignatureError, match="signing key file .* is missing"):
        used._prepare_secrets()
    assert not used.paths.signing_key_file.exists()


def test_the_operator_token_hash_is_owner_only(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path / "data")
    stack.paths.secrets.mkdir(parents=True)
    stack._prepare_secrets()
    assert stack.paths.operator_token_hash_file.stat().st_mode & 0o777 == 0o600
