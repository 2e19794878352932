"""Which files in a folder the `studio` commands take for photos: what faceqa decodes, by suffix."""

from __future__ import annotations

from pathlib import Path

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif")


def photos_in(folder: Path) -> list[Path]:
    """The photos directly in FOLDER, sorted by name; none when it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def no_photos_message(folder: Path) -> str:
    return f"no photos ({'/'.join(PHOTO_SUFFIXES)}) in {folder}"
