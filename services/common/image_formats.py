"""Image format sniffing from magic bytes, shared by ingest (refuse non-images before storing
anything) and faceqa (pick the decoder)."""

from __future__ import annotations

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
SIGNATURE_BYTES = 12


def sniff_format(data: bytes) -> str | None:
    """Pillow format name ("JPEG", "PNG", "WEBP") from the magic bytes, or None."""
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if len(data) >= SIGNATURE_BYTES and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def is_image_signature(data: bytes) -> bool:
    """True when the bytes start like a JPEG, PNG or WebP file."""
    return sniff_format(data) is not None
