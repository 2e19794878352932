"""Local child processes for servers we start ourselves (tests, the embedded deployment)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path

LOG_TAIL_LINES = 40
READY_POLL_INTERVAL = 0.1
# Several torch processes share one machine's cores (the trainer, Triton's model, faceqa): OpenMP threads that spin
# while they wait starve the others (an 8-step training ran 5x slower beside a render). Passive threads sleep. The
# caller's environment wins.
SHARED_CORES_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def with_shared_cores(env: Mapping[str, str]) -> dict[str, str]:
    return {**SHARED_CORES_ENV, **env}


class ProcessStartError(RuntimeError):
    """The process exited or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int, exclude: Collection[int] = ()) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, none in `exclude` (ports already chosen, not yet bound).
    Each is held until all are chosen: free_port() twice can return the same port."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in exclude:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def free_port_run(count: int, exclude: Collection[int] = (), attempts: int = 50) -> int:
    """The first of `count` consecutive free ports (a fleet's workers listen on port, port+1, ...), none in
    `exclude`: a run chosen earlier is not bound until its process starts, so the kernel may offer it again."""
    for _ in range(attempts):
        first = free_port()
        run = range(first, first + count)
        if not set(run) & set(exclude) and all(port_is_free(port) for port in run[1:]):
            return first
    raise RuntimeError(f"no run of {count} free ports found")


def port_is_free(port: int) -> bool:
    """Whether nothing is bound to 127.0.0.1:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def tcp_port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


_PR_SET_PDEATHSIG = 1
# Looked up once in the parent: between fork and exec the child must not dlopen or allocate (another
# thread of the parent may have held the loader's or malloc's lock at the fork).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


# util-linux's setpriv sets the parent-death signal and execs the server. Preferred over a preexec_fn:
# with one, Python runs its at-fork handlers in the child of a multi-threaded parent (grpc, torch),
# which was seen to crash the child before exec (a segfault in logging's at-fork lock reinit).
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv] if _SETPRIV else argv


def _wait_until_past_setpriv(pid: int, timeout: float = 2.0) -> None:
    """setpriv sets the parent-death signal only after it is exec'd, then execs the server: a parent that
    dies in between leaves a server that outlives it (seen when a test killed its parent at once). Returns
    once the child runs the server itself (its command line no longer setpriv's), has exited, or the
    timeout passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            return
        if program and program.decode(errors="replace") != _SETPRIV:
            return
        time.sleep(0.001)


def _terminate_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM it if its parent dies (even by SIGKILL),
    so a killed `studio up` or test run leaves no servers behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class ManagedProcess:
    """A child in its own process group, its output in a log file, stopped as a group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_dir) / f"{name}.log"
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                _with_parent_death_signal(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                preexec_fn=None if _SETPRIV else _terminate_with_parent,
            )
        if _SETPRIV:
            _wait_until_past_setpriv(self._popen.pid)

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def ended_by_itself(self) -> int | None:
        """The exit status of a process that ended without being stopped (a crash, a kill from outside);
        None while it runs, before it started and after stop() or kill()."""
        if self._popen is None or self._stopped:
            return None
        return self._popen.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
        """Poll `check` until it returns True; fail early if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise ProcessStartError(self._failure_text("exited before it was ready"))
            if await check():
                return
            if time.monotonic() >= deadline:
                raise ProcessStartError(self._failure_text(f"not ready after {timeout:.0f}s"))
            await asyncio.sleep(READY_POLL_INTERVAL)

    def _failure_text(self, what: str) -> str:
        code = self._popen.poll() if self._popen else None
        status = f" (exit code {code})" if code is not None else ""
        return f"{self.name} {what}{status}; last lines of {self.log_path}:\n{self.log_tail()}"

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM the whole group, SIGKILL it after `timeout`; safe to call repeatedly."""
        if self._popen is None or self._stopped:
            return self._popen.returncode if self._popen else None
        self._stopped = True
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait()
        # Children that outlived the leader still belong to the group.
        self._signal_group(signal.SIGKILL)
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the group at once, as a crash would (no shutdown code runs)."""
        if self._popen is not None and self._popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._popen.wait()
        self._stopped = True

    def restart(self) -> None:
        """Start again after a stop or kill, with the same command, environment and log file."""
        self.stop()
        self._popen, self._stopped = None, False
        self.start()

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)
