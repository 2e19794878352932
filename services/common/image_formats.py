"""Image format sniffing from magic bytes, shared by ingest (refuse non-images before storing
anything) and faceqa (pick the decoder)."""

from __future__ import annotations

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# ISO base media 'ftyp' major brands of HEIF still images (phones: heic; mif1/msf1 generic HEIF).
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
SIGNATURE_BYTES = 12


def sniff_format(data: bytes) -> str | None:
    """Pillow format name ("JPEG", "PNG", "WEBP", "HEIF") from the magic bytes, or None."""
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if len(data) >= SIGNATURE_BYTES and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) >= SIGNATURE_BYTES and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


def is_image_signature(data: bytes) -> bool:
    """True when the bytes start like a JPEG, PNG, WebP or HEIC/HEIF file."""
    return sniff_format(data) is not None
