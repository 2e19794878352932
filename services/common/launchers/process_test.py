import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.launchers import process
from services.common.launchers.process import (
    ManagedProcess,
    ProcessStartError,
    free_port,
    free_port_run,
    free_ports,
    tcp_port_open,
)


def _alive(pid: int) -> bool:
    """Running, not merely a zombie: an orphan's exit status waits for PID 1 to reap it, which a
    container's init may do late (kill(pid, 0) succeeds on a zombie)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def never_ready() -> bool:
    return False


async def test_wait_ready_fails_early_with_log_tail(tmp_path: Path) -> None:
    process = ManagedProcess("crasher", ["sh", "-c", "echo 'bad flag -x'; exit 3"], tmp_path)
    process.start()
    started = time.monotonic()
    with pytest.raises(ProcessStartError) as caught:
        await process.wait_ready(never_ready, timeout=30)
    assert time.monotonic() - started < 5
    assert "bad flag -x" in str(caught.value)
    assert "exit code 3" in str(caught.value)


async def test_wait_ready_times_out(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", ["sleep", "30"], tmp_path)
    process.start()
    try:
        with pytest.raises(ProcessStartError, match="not ready after"):
            await process.wait_ready(never_ready, timeout=0.3)
    finally:
        process.stop()


async def test_ready_when_port_opens_and_stop_closes_it(tmp_path: Path) -> None:
    port = free_port()
    server = f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.BaseHTTPRequestHandler).serve_forever()"
    process = ManagedProcess("http", [sys.executable, "-c", server], tmp_path)
    process.start()
    try:
        await process.wait_ready(lambda: tcp_port_open("127.0.0.1", port), timeout=10)
        assert process.is_running()
    finally:
        process.stop()
    assert not process.is_running()
    assert not await tcp_port_open("127.0.0.1", port)


def test_stop_kills_the_whole_group_and_is_idempotent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; trap '' TERM; wait"
    process = ManagedProcess("group", ["sh", "-c", script], tmp_path)
    process.start()
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pid_file.read_text())
    process.stop(timeout=0.5)  # the shell ignores SIGTERM: needs the SIGKILL
    assert not process.is_running()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)
    process.stop()


def test_stop_before_start_is_harmless(tmp_path: Path) -> None:
    assert ManagedProcess("idle", ["true"], tmp_path).stop() is None


def test_child_is_terminated_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from services.common.launchers.process import ManagedProcess\n"
        "child = ManagedProcess('sleeper', ['sleep', '300'], sys.argv[1])\n"
        "child.start()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        if not _alive(child_pid):
            return
        time.sleep(0.1)
    os.kill(child_pid, signal.SIGKILL)
    raise AssertionError("the child outlived its SIGKILLed parent")


def test_free_ports_are_distinct_and_skip_the_ones_already_chosen() -> None:
    for _ in range(20):
        chosen = free_ports(1)[0]
        ports = free_ports(3, exclude={chosen})
        assert len(set(ports)) == 3 and chosen not in ports


def test_a_port_run_skips_a_run_chosen_earlier_that_the_kernel_offers_again(monkeypatch) -> None:
    listen = free_port_run(1)  # chosen, not yet bound: the kernel may offer it again
    other = free_ports(1, exclude={listen})[0]
    offered = iter([listen, other])
    monkeypatch.setattr(process, "free_port", lambda: next(offered))
    assert process.free_port_run(1, exclude=range(listen, listen + 1)) == other
