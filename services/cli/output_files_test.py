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
