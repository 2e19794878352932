"""FileKek: a private key file created once, AES-GCM wrapping bound to version and associated data."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import stat
from pathlib import Path

import pytest

from services.common.config import Settings
from services.common.signatures import SignatureError
from services.privacy.audit_log import AuditEntry
from services.privacy.kek import FileKek, KekError
from services.privacy.server import PrivacyServicer, build_servicer
from services.privacy.server_test import consent


def key_bytes(path: Path) -> bytes:
    return base64.b64decode(json.loads(path.read_text())["keys"]["1"])


def test_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "kek.json"
    kek = FileKek(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kek.current_version() == 1 and len(key_bytes(path)) == 32
    wrapped = kek.wrap(1, b"d" * 32, b"aad")
    assert FileKek(path).unwrap(1, wrapped, b"aad") == b"d" * 32


def test_wrap_is_randomised_and_bound(tmp_path: Path) -> None:
    kek = FileKek(tmp_path / "kek.json")
    first, second = kek.wrap(1, b"d" * 32, b"aad"), kek.wrap(1, b"d" * 32, b"aad")
    assert first != second and b"d" * 32 not in first
    with pytest.raises(KekError):
        kek.unwrap(1, first, b"other aad")
    with pytest.raises(KekError):
        kek.unwrap(1, first[:-1] + bytes([first[-1] ^ 1]), b"aad")
    with pytest.raises(KekError, match="version 2"):
        kek.unwrap(2, first, b"aad")
    with pytest.raises(KekError):
        kek.unwrap(1, b"short", b"aad")


def test_key_bytes_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    kek = FileKek(path)
    key = key_bytes(path)
    shown = repr(kek) + str(vars(kek).keys())
    for form in (key.hex(), base64.b64encode(key).decode(), repr(key)):
        assert form not in shown
    with pytest.raises(KekError) as raised:
        kek.unwrap(1, b"x" * 40, b"aad")
    assert base64.b64encode(key).decode() not in str(raised.value)


@pytest.mark.parametrize("content", ["not json", '{"current": 2, "keys": {"1": "AAAA"}}',
                                     '{"current": 1, "keys": {"1": "AAAA"}}', '{"keys": {}}'])
def test_malformed_file_is_refused_without_echoing_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kek.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KekError) as raised:
        FileKek(path)
    assert "AAAA" not in str(raised.value)


def test_loose_mode_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "kek.json"
    FileKek(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        FileKek(path)
    assert "expected 0600" in caplog.text


async def test_a_lost_key_file_is_refused_where_the_store_needs_it(tmp_path: Path) -> None:
    settings = dataclasses.replace(Settings.from_env("privacy"), data_dir=tmp_path / "data")
    kek_file, signing_file = tmp_path / "kek.json", tmp_path / "signing-key.pem"

    def open_vault() -> PrivacyServicer:
        return build_servicer(settings, kek_file=kek_file, signing_key_file=signing_file)

    empty = open_vault()
    empty.close()
    kek_file.unlink()
    signing_file.unlink()
    servicer = open_vault()  # nothing stored under the lost keys yet: new ones are made
    audit = AuditEntry("ingest", "RegisterSubject", "t", "s", "", "ALLOWED")
    await servicer.vault.register_subject("t", "s", consent(), audit)
    await servicer.vault.export_audit()  # signs a checkpoint
    servicer.close()
    key = json.loads(kek_file.read_text())["keys"]["1"]
    kek_file.unlink()
    with pytest.raises(KekError, match=f"master key file {kek_file} is missing") as raised:
        open_vault()
    assert not kek_file.exists() and key not in str(raised.value)
    kek_file.write_text(json.dumps({"current": 1, "keys": {"1": key}}))
    kek_file.chmod(0o600)
    signing_file.unlink()
    with pytest.raises(SignatureError, match=f"signing key file {signing_file} is missing"):
        open_vault()
    assert not signing_file.exists()
