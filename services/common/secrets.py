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
    """Write atomically and durably, with mode 0600 from the first byte (no window where others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A random name, created exclusively and never through a symlink: someone else able to write the directory
    # can neither plant a link nor hand us a file of theirs for the secret to be written into.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # The rename survives a crash only once the directory is synced: KEK rotation commits rewrapped keys after this.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
