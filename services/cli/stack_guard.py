"""One embedded stack per data directory and per public port: a second `studio up` on either is refused
before it starts anything. Two stacks on one data directory would run two nats-servers on one JetStream
store and overwrite each other's stack.json; gRPC's SO_REUSEPORT would let two stacks share a port
silently, each call going to either."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".stack.lock"


class StackConflict(RuntimeError):
    """Another stack holds the data directory or the port; nothing was started."""


class DataDirLock:
    """An exclusive flock on DATA/.stack.lock, held while the stack runs; the kernel drops it when the
    holder dies, so a killed `studio up` leaves nothing to clean up."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StackConflict(f"{data_dir} is in use by another stack (pid {holder}); stop it first, "
                                "or give another --data") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def ensure_port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise StackConflict(f"port {port} is already in use (another stack?); give another --port") from None
