"""Secret files (services/common/secrets.py): 0600 from creation, atomic, never written through a planted link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.common import atomic_files
from services.common.secrets import write_secret_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_file_is_0600_with_the_exact_bytes(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "kek.json"
    write_secret_file(key, b"\x00first\xff")
    assert key.read_bytes() == b"\x00first\xff"
    assert mode(key) == 0o600


def test_overwriting_replaces_the_content_and_keeps_0600(tmp_path: Path) -> None:
    key = tmp_path / "kek.json"
    write_secret_file(key, b"first, and longer")
    write_secret_file(key, b"second")
    assert key.read_bytes() == b"second"
    assert mode(key) == 0o600


def test_a_planted_symlink_is_left_alone_and_no_temporary_file_remains(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    directory = tmp_path / "keys"
    directory.mkdir()
    planted = directory / f".kek.json.{os.getpid()}.tmp"  # the name the old code used
    planted.symlink_to(victim)
    write_secret_file(directory / "kek.json", b"secret")
    assert (directory / "kek.json").read_bytes() == b"secret"
    assert victim.read_bytes() == b"untouched"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert sorted(path.name for path in directory.iterdir()) == sorted(["kek.json", planted.name])


def test_a_symlink_at_the_temporary_name_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    monkeypatch.setattr(atomic_files.secrets, "token_hex", lambda _: "guessed")
    (tmp_path / ".kek.json.guessed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_secret_file(tmp_path / "kek.json", b"secret")
    assert victim.read_bytes() == b"untouched"
    assert not (tmp_path / "kek.json").exists()


def test_a_failed_write_keeps_the_original_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "kek.json"
    write_secret_file(key, b"original")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic_files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_secret_file(key, b"replacement")
    assert key.read_bytes() == b"original"
    assert [path.name for path in tmp_path.iterdir()] == ["kek.json"]
