"""`studio certificate verify`: a deletion certificate verifies; any other document signed by the vault
(an audit checkpoint) is refused with one line saying why, and exit status 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli.main import main
from services.common.audit_chain import checkpoint_body
from services.common.signatures import CERTIFICATE_TYPE, SigningKey


def verify(document: dict, key: SigningKey, tmp_path: Path, *extra: str) -> int:
    path, pem = tmp_path / "document.json", tmp_path / "vault-signing.pub"
    path.write_text(json.dumps(document))
    pem.write_text(key.public_pem)
    with pytest.raises(SystemExit) as leaving:
        main(["certificate", "verify", str(path), "--public-key", str(pem), *extra])
        raise SystemExit(0)
    return leaving.value.code


def test_a_signed_checkpoint_is_not_a_valid_certificate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    key = SigningKey.from_file(tmp_path / "signing-key.pem")
    checkpoint = key.sign(checkpoint_body(64, "ab" * 32, "2030-01-01T00:00:00+00:00"))
    assert verify(checkpoint, key, tmp_path) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "audit checkpoint, not a deletion certificate" in captured.err
    assert verify(checkpoint, key, tmp_path, "--json") == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_a_signed_certificate_verifies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    key = SigningKey.from_file(tmp_path / "signing-key.pem")
    certificate = key.sign({"type": CERTIFICATE_TYPE, "deletion_id": "del_1", "subject_id": "s",
                            "destroyed": [{"service": "privacy"}]})
    assert verify(certificate, key, tmp_path) == 0
    assert "valid deletion certificate del_1" in capsys.readouterr().out
