"""`studio certificate verify`: a deletion certificate verifies; any other document signed by the vault
(an audit checkpoint) is refused with one line saying why, and exit status 1. `studio audit verify`: an export
of any length verifies in constant memory, from this vault or an older one (every checkpoint last)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from services.cli.main import main
from services.common.audit_chain import GENESIS_HASH, checkpoint_body, entry_hash, entry_record
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


# --- studio audit verify: an export of any length, in constant memory ------------------------------------------

EXPORT_ENTRIES = 20_000
VERIFY_PEAK_BYTES = 4 * 2**20  # the whole export as parsed records would be ~25 MB


def write_export(path: Path, key: SigningKey, entries: int, checkpoints_last: bool = False) -> None:
    """A valid export, written as the vault writes one (a checkpoint after every 64th entry and the head), or as
    older vaults did (every checkpoint last)."""
    held, prev = [], GENESIS_HASH
    with path.open("w") as out:
        for seq in range(1, entries + 1):
            at = f"2030-01-01T00:{seq // 60 % 60:02d}:{seq % 60:02d}+00:00"
            fields = {"service": "renderer", "action": "GetDataKey", "tenant_id": "t", "subject_id": f"s{seq % 3000}",
                      "purpose": "KEY_PURPOSE_DECRYPT_LORA", "outcome": "ALLOWED", "detail": ""}
            prev_hash, prev = prev, entry_hash(prev, seq, at, fields)
            out.write(json.dumps(entry_record(seq, at, fields, prev_hash, prev), sort_keys=True) + "\n")
            if seq % 64 == 0 or seq == entries:
                checkpoint = json.dumps(key.sign(checkpoint_body(seq, prev, at)), sort_keys=True) + "\n"
                held.append(checkpoint) if checkpoints_last else out.write(checkpoint)
        out.writelines(held)


def audit_verify(path: Path, key: SigningKey, tmp_path: Path, *extra: str) -> int:
    pem = tmp_path / "vault-signing.pub"
    pem.write_text(key.public_pem)
    with pytest.raises(SystemExit) as leaving:
        main(["audit", "verify", "--file", str(path), "--public-key", str(pem), *extra])
        raise SystemExit(0)
    return leaving.value.code


def test_a_long_export_verifies_in_constant_memory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    key, export = SigningKey.from_file(tmp_path / "signing-key.pem"), tmp_path / "audit.jsonl"
    write_export(export, key, EXPORT_ENTRIES)
    tracemalloc.start()
    try:
        code = audit_verify(export, key, tmp_path, "--json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    verdict = json.loads(capsys.readouterr().out)
    assert code == 0 and verdict["ok"] and verdict["entries"] == EXPORT_ENTRIES, verdict
    assert verdict["checkpoints"] == EXPORT_ENTRIES // 64 + 1
    assert peak < VERIFY_PEAK_BYTES, f"verifying peaked at {peak / 2**20:.1f} MiB"


def test_an_export_of_an_older_vault_verifies_and_names_a_break(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    key, export = SigningKey.from_file(tmp_path / "signing-key.pem"), tmp_path / "audit.jsonl"
    write_export(export, key, 1_000, checkpoints_last=True)
    assert audit_verify(export, key, tmp_path) == 0
    assert "audit log intact: 1000 entries, 16 signed checkpoints" in capsys.readouterr().out
    lines = export.read_text().splitlines(keepends=True)
    record = json.loads(lines[99])
    record["outcome"] = "DENIED_POLICY"  # rehashed: only the next entry's link can tell
    record["hash"] = entry_hash(record["prev_hash"], 100, record["at"], record)
    export.write_text("".join(lines[:99] + [json.dumps(record) + "\n"] + lines[100:]))
    assert audit_verify(export, key, tmp_path) == 1
    assert "BROKEN at entry 101" in capsys.readouterr().out  # the next entry no longer follows it
