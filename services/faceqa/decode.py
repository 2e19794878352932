"""Untrusted bytes to an upright RGB image: format from the magic bytes, size (and a JPEG's scan
count) from the header before any pixel is decoded, EXIF orientation applied before anything looks
at the pixels."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from services.common.image_formats import sniff_format
from services.faceqa.reasons import TOO_LARGE, UNREADABLE, UNSUPPORTED_FORMAT
from services.faceqa.thresholds import DEFAULTS, Thresholds

pillow_heif.register_heif_opener()
# Anything that decodes untrusted bytes in this process refuses pixel bombs before allocating
# (Pillow raises past twice this value, warns past it); decode_upright rejects past it anyway.
Image.MAX_IMAGE_PIXELS = DEFAULTS.max_pixels

_ORIENTATION_TAG = 0x0112
_JPEG_START_OF_SCAN = b"\xff\xda"
_HIGH_DEPTH_GREY_MODES = ("I", "I;16", "I;16B", "I;16L")
# Pillow raises these (not only OSError) for malformed or truncated files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, RuntimeError)


@dataclass(frozen=True)
class Decoded:
    """Either an upright RGB image or the reason it could not be had."""

    image: Image.Image | None = None
    reason: str | None = None


def decode_upright(data: bytes, thresholds: Thresholds = DEFAULTS) -> Decoded:
    image_format = sniff_format(data)
    if image_format is None:
        return Decoded(reason=UNSUPPORTED_FORMAT)
    try:
        image = Image.open(io.BytesIO(data), formats=[image_format])  # reads the header only
    except Image.DecompressionBombError:
        return Decoded(reason=TOO_LARGE)
    except DECODE_ERRORS:
        return Decoded(reason=UNREADABLE)
    if too_large(*image.size, thresholds):
        return Decoded(reason=TOO_LARGE)
    if image_format == "JPEG" and too_many_scans(data, thresholds):
        return Decoded(reason=UNREADABLE)
    try:
        return Decoded(image=_upright_rgb(image))
    except DECODE_ERRORS:
        return Decoded(reason=UNREADABLE)


def too_large(width: int, height: int, thresholds: Thresholds = DEFAULTS) -> bool:
    side = thresholds.max_side_px
    return width > side or height > side or width * height > thresholds.max_pixels


def too_many_scans(data: bytes, thresholds: Thresholds = DEFAULTS) -> bool:
    """A progressive JPEG decodes its whole image once per scan: a small file repeating a scan
    thousands of times keeps a worker busy for minutes. Counts every FF DA pair, so a thumbnail's
    scans count too (and, rarely, such bytes inside metadata): an overestimate, far below the bound."""
    return data.count(_JPEG_START_OF_SCAN) > thresholds.max_jpeg_scans


def _upright_rgb(image: Image.Image) -> Image.Image:
    image.load()
    upright = _upright(image)
    if upright.mode in _HIGH_DEPTH_GREY_MODES:  # before the alpha branch, whose convert would clip to white
        upright = _grey_to_8_bit(upright)
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        # Transparent areas become white rather than whatever colour the hidden pixels hold.
        rgba = upright.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return upright if upright.mode == "RGB" else upright.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """The image turned by its EXIF orientation; as stored when its EXIF block cannot be parsed
    (the pixels are fine: JPEG's decoder tolerates such blocks, PNG's and WebP's raise)."""
    try:
        # exif_transpose copies the pixels even when the orientation is already upright.
        turned = image.getexif().get(_ORIENTATION_TAG, 1) != 1
        return ImageOps.exif_transpose(image, in_place=False) if turned else image
    except DECODE_ERRORS:
        return image


def _grey_to_8_bit(image: Image.Image) -> Image.Image:
    """Grey (L, or LA with the tRNS grey level transparent) scaled from 16 bits: Pillow's convert
    clips the samples to 255 instead of scaling them, which whitens the photo."""
    samples = np.asarray(image)
    grey = Image.fromarray(np.minimum(samples.astype(np.uint32) >> 8, 255).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        grey.putalpha(Image.fromarray(np.where(samples == transparent, 0, 255).astype(np.uint8), "L"))
    return grey
