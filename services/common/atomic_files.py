"""Files written whole or not at all, for keys, blobs and the CLI's outputs alike."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path, mode: int, temp_prefix: str) -> Iterator[BinaryIO]:
    """A handle (read and write) on a new temporary file beside `path`; it becomes `path` when the block ends without
    an error, and is removed otherwise, leaving `path` as it was. The temporary file has a random name, is created
    exclusively with `mode` and never through a symlink: someone else able to write the directory can neither plant
    a link nor hand us a file of theirs (with their mode) to write into. Synced before the rename."""
    temporary = path.with_name(f"{temp_prefix}{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(descriptor, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes, mode: int, temp_prefix: str) -> None:
    """`data` at `path`, or (on any failure) the file as it was; see atomic_file."""
    with atomic_file(path, mode, temp_prefix) as handle:
        handle.write(data)


def sync_directory(directory: Path) -> None:
    """A rename survives a crash only once its directory is synced."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
