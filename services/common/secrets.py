"""Secret files (keys, tokens): created mode 0600, never logged."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SERVICE_TOKEN_METADATA = "x-service-token"
API_KEY_METADATA = "x-api-key"


def write_secret_file(path: Path, value: bytes) -> None:
    """Write atomically with mode 0600 from the first byte (no window where others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(value)
    os.replace(temporary, path)


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
