from pathlib import Path

import pytest

from services.cli.output_files import whole_file


def test_the_file_appears_whole_with_its_folders_and_owner_only_when_private(tmp_path: Path) -> None:
    out = tmp_path / "new" / "archive.tar"
    with whole_file(out, as_json=False, private=True) as handle:
        handle.write(b"data")
        assert not out.exists()  # nothing under the final name until the block ends
    assert out.read_bytes() == b"data" and out.stat().st_mode & 0o777 == 0o600
    assert [path.name for path in out.parent.iterdir()] == ["archive.tar"]


def test_a_failed_block_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    out.write_bytes(b"before")
    with pytest.raises(ConnectionError), whole_file(out, as_json=False) as handle:
        handle.write(b"half")
        raise ConnectionError("the stream broke")
    assert out.read_bytes() == b"before" and [path.name for path in tmp_path.iterdir()] == ["audit.jsonl"]


def test_a_folder_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended, whole_file(tmp_path, as_json=False):
        pass
    assert ended.value.code == 1 and "is a folder" in capsys.readouterr().err


def test_a_planted_partial_file_cannot_widen_a_private_file(tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    planted = tmp_path / ".out.tar.partial"  # the stand-in's name as it once was: fixed, so others could plant it
    planted.write_bytes(b"")
    planted.chmod(0o666)
    with whole_file(out, as_json=False, private=True) as handle:
        handle.write(b"faces")
    assert out.read_bytes() == b"faces" and out.stat().st_mode & 0o777 == 0o600


def test_a_planted_symlink_does_not_receive_the_data(tmp_path: Path) -> None:
    out, victim = tmp_path / "out.tar", tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / ".out.tar.partial").symlink_to(victim)
    with whole_file(out, as_json=False, private=True) as handle:
        handle.write(b"faces")
    assert victim.read_bytes() == b"untouched"
    assert out.read_bytes() == b"faces" and not out.is_symlink() and out.stat().st_mode & 0o777 == 0o600


def test_an_out_that_is_a_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    out, victim = tmp_path / "portrait.png", tmp_path / "victim"
    victim.write_bytes(b"untouched")
    out.symlink_to(victim)
    with whole_file(out, as_json=False, private=True) as handle:
        handle.write(b"face")
    assert victim.read_bytes() == b"untouched" and not out.is_symlink() and out.read_bytes() == b"face"
