"""The master key-encryption key (KEK): wraps every subject's data key; never leaves the vault.

`KekProvider` is the seam for an external KMS. `FileKek` is the embedded default: a 0600 JSON
file {"current": 1, "keys": {"1": "<base64 32 bytes>"}} holding every version still needed to
unwrap, so rotation can add a version and rewrap without losing older ones.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.secrets import read_secret_file, write_secret_file

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12


class KekError(RuntimeError):
    """A KEK problem. Messages name versions and paths, never key bytes."""


class KekProvider(Protocol):
    def current_version(self) -> int: ...

    def wrap(self, version: int, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, version: int, blob: bytes, aad: bytes) -> bytes: ...

    def versions(self) -> list[int]: ...

    def add_version(self) -> int:
        """Create a new version and make it current; durable before it returns."""
        ...

    def retire(self, versions: list[int]) -> None:
        """Destroy these (non-current) versions: what was wrapped only under them is unreadable."""
        ...


class FileKek:
    """AES-256-GCM key wrapping under keys kept in a local secret file (created on first use)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """`create=False` where data keys wrapped under this file's keys exist: a missing file is then an
        error, since a new master key could open none of them."""
        self._path = Path(path)
        if not self._path.exists():
            if not create:
                raise KekError(
                    f"master key file {self._path} is missing, but the vault's store holds data keys wrapped"
                    " under it; restore the file (a new master key could not open them)"
                )
            write_secret_file(self._path, _new_key_file())
            log.info("created master key file %s", self._path)
        _warn_if_readable_by_others(self._path)
        self._current, self._keys = _parse_key_file(self._path, read_secret_file(self._path))

    def __repr__(self) -> str:
        return f"FileKek(path={str(self._path)!r}, current={self._current}, versions={sorted(self._keys)})"

    @property
    def path(self) -> Path:
        return self._path

    def current_version(self) -> int:
        return self._current

    def wrap(self, version: int, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher(version).encrypt(nonce, plaintext, _bound_aad(version, aad))

    def unwrap(self, version: int, blob: bytes, aad: bytes) -> bytes:
        if len(blob) <= NONCE_BYTES:
            raise KekError(f"wrapped key under KEK version {version} is truncated")
        nonce, ciphertext = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            return self._cipher(version).decrypt(nonce, ciphertext, _bound_aad(version, aad))
        except InvalidTag:
            raise KekError(f"wrapped key does not open under KEK version {version}") from None

    def versions(self) -> list[int]:
        return sorted(self._keys)

    def add_version(self) -> int:
        version = max(self._keys) + 1
        keys = {**self._keys, version: AESGCM.generate_key(bit_length=KEY_BYTES * 8)}
        self._save(version, keys)
        log.info("master key version %d created and made current in %s", version, self._path)
        return version

    def retire(self, versions: list[int]) -> None:
        if self._current in versions:
            raise KekError(f"KEK version {self._current} is current and cannot be retired")
        self._save(self._current, {v: key for v, key in self._keys.items() if v not in versions})
        log.info("master key versions %s retired from %s", sorted(versions), self._path)

    def _save(self, current: int, keys: dict[int, bytes]) -> None:
        document = {"current": current, "keys": {str(v): base64.b64encode(k).decode() for v, k in keys.items()}}
        try:
            write_secret_file(self._path, json.dumps(document, indent=2).encode())
        except OSError as error:
            raise KekError(f"cannot write master key file {self._path}: {error.strerror}") from None
        self._current, self._keys = current, keys

    def _cipher(self, version: int) -> AESGCM:
        key = self._keys.get(version)
        if key is None:
            raise KekError(f"KEK version {version} is not in {self._path}")
        return AESGCM(key)


def _bound_aad(version: int, aad: bytes) -> bytes:
    # A blob wrapped under one KEK version must not be accepted as another version's.
    return f"studio-kek-v{version}|".encode() + aad


def _new_key_file() -> bytes:
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    document = {"current": 1, "keys": {"1": base64.b64encode(key).decode()}}
    return json.dumps(document, indent=2).encode()


def _parse_key_file(path: Path, raw: bytes) -> tuple[int, dict[int, bytes]]:
    try:
        document = json.loads(raw)
        current = int(document["current"])
        keys = {int(version): base64.b64decode(encoded, validate=True)
                for version, encoded in document["keys"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise KekError(f"master key file {path} is malformed") from None
    if current not in keys:
        raise KekError(f"master key file {path} lacks its current version {current}")
    if any(len(key) != KEY_BYTES for key in keys.values()):
        raise KekError(f"master key file {path} holds a key that is not {KEY_BYTES} bytes")
    return current, keys


def _warn_if_readable_by_others(path: Path) -> None:
    # A warning, not a refusal: mounted secrets (e.g. Kubernetes) may carry wider modes we do not set.
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("master key file %s has mode %o; expected 0600", path, mode)
