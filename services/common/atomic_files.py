"""Files written whole or not at all, for keys and blobs alike."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int, temp_prefix: str) -> None:
    """`data` at `path`, or (on any failure) the file as it was. The temporary file beside it has a random name,
    is created exclusively with `mode` and never through a symlink: someone else able to write the directory can
    neither plant a link nor hand us a file of theirs to write into. Synced before the rename."""
    temporary = path.with_name(f"{temp_prefix}{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def sync_directory(directory: Path) -> None:
    """A rename survives a crash only once its directory is synced."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
