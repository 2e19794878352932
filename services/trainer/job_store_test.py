"""A sealed crop that decrypts but is no image a trainer can read fails its job for good, whatever Pillow raises."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from services.common.workqueue import PermanentJobError
from services.trainer.job_store import decoded_crop


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming another size (its CRC fixed), the pixels left as they are."""
    header = data[12:16] + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def test_a_readable_crop_is_rgb() -> None:
    assert decoded_crop(png(), "a.png").size == (8, 8)


@pytest.mark.parametrize(
    "data",
    [
        with_header_size(png(), 20_000, 20_000),  # DecompressionBombError, no OSError
        png()[:8] + struct.pack(">I", 5) + png()[12:],  # a 5-byte IHDR: ValueError
        b"not an image at all",  # UnidentifiedImageError, an OSError
    ],
    ids=["pixel-bomb", "short-header", "garbage"],
)
def test_an_unreadable_crop_is_a_permanent_error(data: bytes) -> None:
    with pytest.raises(PermanentJobError, match=r"a training crop is not a readable image \(c\.png\)"):
        decoded_crop(data, "c.png")
