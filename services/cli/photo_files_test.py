from pathlib import Path

from services.cli.photo_files import no_photos_message, photos_in


def test_photos_in_takes_what_faceqa_decodes_by_suffix_in_any_case(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.heic", "c.png", "notes.txt", "d.webp.bak"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "album.jpg").mkdir()  # a folder named like a photo is not one
    assert [p.name for p in photos_in(tmp_path)] == ["a.heic", "b.JPG", "c.png"]


def test_no_folder_has_no_photos_and_the_message_names_the_suffixes(tmp_path: Path) -> None:
    assert photos_in(tmp_path / "absent") == [] and photos_in(tmp_path) == []
    assert ".heic" in no_photos_message(tmp_path) and str(tmp_path) in no_photos_message(tmp_path)
