"""Signed documents: a signature vouches for one kind of document only, and a lost signing key is not
silently replaced where documents signed by it exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.audit_chain import checkpoint_body
from services.common.signatures import (
    CERTIFICATE_TYPE,
    SignatureError,
    SigningKey,
    verify_certificate,
    verify_checkpoint,
)


def test_a_checkpoint_is_no_certificate_and_a_certificate_no_checkpoint(tmp_path: Path) -> None:
    key = SigningKey.from_file(tmp_path / "signing-key.pem")
    checkpoint = key.sign(checkpoint_body(64, "ab" * 32, "2030-01-01T00:00:00+00:00"))
    certificate = key.sign({"type": CERTIFICATE_TYPE, "deletion_id": "del_1"})
    verify_checkpoint(checkpoint, key.public_key)
    verify_certificate(certificate, key.public_key)
    with pytest.raises(SignatureError, match="is an audit checkpoint, not a deletion certificate"):
        verify_certificate(checkpoint, key.public_key)
    with pytest.raises(SignatureError, match="is a deletion certificate, not an audit checkpoint"):
        verify_checkpoint(certificate, key.public_key)
    with pytest.raises(SignatureError, match="is untyped, not a deletion certificate"):
        verify_certificate(key.sign({"deletion_id": "del_1"}), key.public_key)


def test_a_missing_signing_key_is_created_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    with pytest.raises(SignatureError, match=str(path)):
        SigningKey.from_file(path, create=False)
    assert not path.exists()
    created = SigningKey.from_file(path)
    assert SigningKey.from_file(path, create=False).key_id == created.key_id
