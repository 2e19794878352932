"""AES-256-GCM envelopes: what the blob store holds for every photo, crop, LoRA and portrait.

Layout (big-endian):
    b"PSE1" | u16 len(key_id) | key_id (utf-8) | u32 key_version | 12-byte nonce | ciphertext+tag
The header (everything before the ciphertext) is authenticated together with the caller's
associated data, so a blob cannot be relabelled to another key id or version.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PSE1"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
MAX_KEY_ID_BYTES = 0xFFFF
MAX_KEY_VERSION = 0xFFFFFFFF
_KEY_ID_LENGTH = struct.Struct(">H")
_KEY_VERSION = struct.Struct(">I")
_FIELD_LENGTH = struct.Struct(">I")


class EnvelopeError(Exception):
    """A blob that is malformed, or does not open under this key and associated data."""


@dataclass(frozen=True)
class EnvelopeHeader:
    key_id: str
    key_version: int


def _encode_header(key_id: str, key_version: int) -> bytes:
    key_id_bytes = key_id.encode("utf-8")
    if not key_id_bytes or len(key_id_bytes) > MAX_KEY_ID_BYTES:
        raise ValueError(f"key_id must be 1..{MAX_KEY_ID_BYTES} utf-8 bytes")
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise ValueError("key_version must fit in an unsigned 32-bit integer")
    return MAGIC + _KEY_ID_LENGTH.pack(len(key_id_bytes)) + key_id_bytes + _KEY_VERSION.pack(key_version)


def _split(blob: bytes | memoryview) -> tuple[EnvelopeHeader, bytes, bytes, memoryview]:
    """(header, header bytes, nonce, ciphertext+tag as a view: no copy of a large blob), or EnvelopeError."""
    blob = memoryview(blob)
    if blob[: len(MAGIC)] != MAGIC:
        raise EnvelopeError("not a sealed envelope (bad magic)")
    offset = len(MAGIC)
    if len(blob) < offset + _KEY_ID_LENGTH.size:
        raise EnvelopeError("truncated envelope header")
    (key_id_length,) = _KEY_ID_LENGTH.unpack_from(blob, offset)
    offset += _KEY_ID_LENGTH.size
    header_end = offset + key_id_length + _KEY_VERSION.size
    if len(blob) < header_end + NONCE_SIZE + TAG_SIZE:
        raise EnvelopeError("truncated envelope")
    try:
        key_id = bytes(blob[offset : offset + key_id_length]).decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("envelope key id is not utf-8") from None
    (key_version,) = _KEY_VERSION.unpack_from(blob, offset + key_id_length)
    nonce = bytes(blob[header_end : header_end + NONCE_SIZE])
    return EnvelopeHeader(key_id, key_version), bytes(blob[:header_end]), nonce, blob[header_end + NONCE_SIZE :]


def _cipher(dek: bytes) -> AESGCM:
    if not isinstance(dek, bytes | bytearray) or len(dek) != KEY_SIZE:
        raise EnvelopeError(f"data key must be {KEY_SIZE} bytes")
    return AESGCM(bytes(dek))


def _full_aad(header: bytes, aad: bytes) -> bytes:
    return _FIELD_LENGTH.pack(len(header)) + header + aad


def seal(dek: bytes, *, key_id: str, key_version: int, aad: bytes, plaintext: bytes) -> bytes:
    header = _encode_header(key_id, key_version)
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = _cipher(dek).encrypt(nonce, plaintext, _full_aad(header, aad))
    return header + nonce + ciphertext


def open_sealed(dek: bytes, *, aad: bytes, blob: bytes) -> bytes:
    _, header, nonce, ciphertext = _split(blob)
    try:
        return _cipher(dek).decrypt(nonce, ciphertext, _full_aad(header, aad))
    except InvalidTag:
        raise EnvelopeError("envelope does not open: wrong key, wrong associated data, or tampered") from None


def header_of(blob: bytes) -> EnvelopeHeader:
    """Which key sealed this blob; needs no key, and is not authenticated until it opens."""
    return _split(blob)[0]


def object_aad(tenant_id: str, subject_id: str, object_key: str) -> bytes:
    """Associated data binding a blob to its tenant, subject and object key."""
    fields = [b"portrait-studio/object/v1", tenant_id.encode(), subject_id.encode(), object_key.encode()]
    return b"".join(_FIELD_LENGTH.pack(len(field)) + field for field in fields)
