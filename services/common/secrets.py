"""Secret files (keys, tokens): created mode 0600, never logged."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from services.common.atomic_files import sync_directory, write_atomically

SERVICE_TOKEN_METADATA = "x-service-token"
API_KEY_METADATA = "x-api-key"


def write_secret_file(path: Path, value: bytes) -> None:
    """Write atomically and durably, with mode 0600 from the first byte (no window where others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, value, 0o600, f".{path.name}.")
    sync_directory(path.parent)  # KEK rotation commits rewrapped keys once this returns


def read_secret_file(path: Path) -> bytes:
    return path.read_bytes()


def ensure_secret_file(path: Path, make: callable) -> bytes:
    if not path.exists():
        write_secret_file(path, make())
    return read_secret_file(path)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """API keys are 256-bit random, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def constant_time_equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())
