"""In-process quality check of one uploaded photo: format, size, decoding and exactly one face.

Pure function of the bytes (plus the dlib models); no I/O besides loading the models once.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import dlib
import numpy as np
from PIL import Image, ImageOps

from services.common.image_formats import sniff_format
from services.faceqa.models import face_models
from services.faceqa.reasons import (
    MULTIPLE_FACES,
    NO_FACE,
    TOO_LARGE,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    message_for,
)

MAX_SIDE_PX = 8000
MAX_PIXELS = 40_000_000
DETECTION_LONG_SIDE_PX = 800
DETECTION_UPSAMPLE = 1

# Anything that decodes untrusted bytes in this process refuses pixel bombs before allocating
# (Pillow raises past twice this value, warns past it); check_photo rejects past it anyway.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_HIGH_DEPTH_GREY_MODES = ("I", "I;16", "I;16B", "I;16L")
# Pillow raises these (not only OSError) for malformed or truncated files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


@dataclass(frozen=True)
class PhotoCheck:
    """Outcome of check_photo.

    face_box is (left, top, right, bottom) in the upright image's pixels, right and bottom
    exclusive (Pillow's crop convention). width and height are those of the upright image, 0 when
    the photo was rejected before decoding.
    """

    accepted: bool
    reasons: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    face_box: tuple[int, int, int, int] | None = None
    embedding: tuple[float, ...] | None = None
    crop_png: bytes | None = None
    width: int = 0
    height: int = 0


def check_photo(data: bytes, *, crop_size: int = 64) -> PhotoCheck:
    """Check one uploaded photo; accepted only if it decodes and shows exactly one face."""
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    image_format = sniff_format(data)
    if image_format is None:
        return _rejected(UNSUPPORTED_FORMAT)
    try:
        image = Image.open(io.BytesIO(data), formats=[image_format])  # reads the header only
    except Image.DecompressionBombError:
        return _rejected(TOO_LARGE)
    except _DECODE_ERRORS:
        return _rejected(UNREADABLE)
    if _too_large(*image.size):
        return _rejected(TOO_LARGE)
    try:
        upright = _decode_upright_rgb(image)
    except _DECODE_ERRORS:
        return _rejected(UNREADABLE)
    return _check_faces(upright, crop_size)


def _too_large(width: int, height: int) -> bool:
    return width > MAX_SIDE_PX or height > MAX_SIDE_PX or width * height > MAX_PIXELS


def _decode_upright_rgb(image: Image.Image) -> Image.Image:
    image.load()
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        # Transparent areas become white rather than whatever colour the hidden pixels hold.
        rgba = upright.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if upright.mode in _HIGH_DEPTH_GREY_MODES:
        upright = _grey_to_8_bit(upright)
    return upright.convert("RGB")


def _grey_to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow's convert clips 16-bit samples to 255 instead of scaling them, which whitens the photo.
    samples = np.asarray(image).astype(np.uint32) >> 8
    return Image.fromarray(np.minimum(samples, 255).astype(np.uint8), "L")


def _check_faces(upright: Image.Image, crop_size: int) -> PhotoCheck:
    width, height = upright.size
    faces = _detect_faces(upright)
    if not faces:
        return _rejected(NO_FACE, width, height)
    if len(faces) > 1:
        return _rejected(MULTIPLE_FACES, width, height)
    face = faces[0]
    pixels = np.asarray(upright)
    models = face_models()
    landmarks = models.landmarks(pixels, face)
    return PhotoCheck(
        accepted=True,
        face_box=_clamped_box(face, width, height),
        embedding=models.descriptor(pixels, landmarks),
        crop_png=_face_crop_png(pixels, landmarks, crop_size),
        width=width,
        height=height,
    )


def _detect_faces(upright: Image.Image) -> list[dlib.rectangle]:
    """HOG detections on a copy scaled to DETECTION_LONG_SIDE_PX, mapped back to upright pixels."""
    width, height = upright.size
    scale = min(1.0, DETECTION_LONG_SIDE_PX / max(width, height))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = upright if small_size == upright.size else upright.resize(small_size, Image.Resampling.BILINEAR)
    detections = face_models().detector(np.asarray(small), DETECTION_UPSAMPLE)
    x_factor, y_factor = width / small_size[0], height / small_size[1]
    return [_scale_rect(rect, x_factor, y_factor) for rect in detections]


def _scale_rect(rect: dlib.rectangle, x_factor: float, y_factor: float) -> dlib.rectangle:
    # dlib rectangles are inclusive of right/bottom, so scale the exclusive edge and step back.
    return dlib.rectangle(
        round(rect.left() * x_factor),
        round(rect.top() * y_factor),
        round((rect.right() + 1) * x_factor) - 1,
        round((rect.bottom() + 1) * y_factor) - 1,
    )


def _clamped_box(face: dlib.rectangle, width: int, height: int) -> tuple[int, int, int, int]:
    """The detection as (left, top, right, bottom), right/bottom exclusive, kept inside the image."""
    return (
        min(max(face.left(), 0), width),
        min(max(face.top(), 0), height),
        min(max(face.right() + 1, 0), width),
        min(max(face.bottom() + 1, 0), height),
    )


def _face_crop_png(pixels: np.ndarray, landmarks: dlib.full_object_detection, crop_size: int) -> bytes:
    chip = dlib.get_face_chip(pixels, landmarks, size=crop_size)
    buffer = io.BytesIO()
    Image.fromarray(chip, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _rejected(reason: str, width: int = 0, height: int = 0) -> PhotoCheck:
    return PhotoCheck(
        accepted=False,
        reasons=(reason,),
        messages=(message_for(reason),),
        width=width,
        height=height,
    )
