"""Files a command writes for its user: whole or not at all, so a refused or broken call leaves no
half-written file behind that looks like a good one; and a folder for them, checked before the work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from services.cli.failures import fail
from services.common.atomic_files import atomic_file


@contextmanager
def whole_file(out: Path, as_json: bool, private: bool = False) -> Iterator[BinaryIO]:
    """A handle on OUT's stand-in (readable too: a caller may check what it wrote); OUT appears only when the block
    ends without an error. Missing parent folders are made; a folder as OUT is refused in one line. `private`:
    owner-only (0600). The stand-in is a new file of a random name, created with its mode and never through a
    symlink (services/common/atomic_files.py): nothing planted beside OUT can widen its mode or receive its bytes."""
    if out.is_dir():
        fail(f"--out {out} is a folder; give a file name", as_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, 0o600 if private else 0o644, f".{out.name}.") as handle:
        yield handle


def check_out_folder(out: Path, as_json: bool) -> None:
    """Before a long job: OUT is a folder, or one that can be made, and we may write there. Makes nothing."""
    existing = next(path for path in (out, *out.parents) if path.exists())  # '.' or '/' at the latest
    where = "" if existing == out else f": {existing}"
    if not existing.is_dir():
        fail(f"--out {out}{where} is a file, not a folder", as_json)
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"--out {out}{where} is not writable", as_json)
