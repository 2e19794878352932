"""ShmGuard (launchers/triton.py) on real files under /dev/shm named as a server's python backend names its regions."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.launchers.process import free_port
from services.common.launchers.triton import SHM_DIR, ShmGuard, shm_region_prefix


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def private_within(region: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while mode(region) != 0o600 and time.monotonic() < deadline:
        time.sleep(0.05)
    return mode(region) == 0o600


@pytest.fixture
def region() -> Iterator[Path]:
    path = SHM_DIR / f"{shm_region_prefix(free_port())}a-reloaded-stubs-region"
    path.write_bytes(b"a decrypted adapter")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_a_region_made_readable_by_all_is_private_again_while_the_guard_runs(region: Path) -> None:
    port = int(region.name.split("_")[2])
    guard = ShmGuard(port, interval_s=0.1).start()
    try:
        for _ in range(2):  # a region created anew at any time, not only at the server's start
            region.chmod(0o644)
            assert private_within(region, timeout_s=2)
    finally:
        guard.stop()
    region.chmod(0o644)
    time.sleep(0.3)
    assert mode(region) == 0o644  # stopped: tends nothing more
    guard.stop()  # idempotent
