import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from services.cli import supervisor
from services.cli.supervisor import Supervised, Supervisor
from services.common.launchers.process import ManagedProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def always_ready() -> bool:
    return True


def kept(name: str, code: str, log_dir: Path) -> Supervised:
    process = ManagedProcess(name, [sys.executable, "-c", code], log_dir)
    process.start()
    return Supervised(name, process, always_ready, ready_timeout_s=30)


async def test_a_killed_process_is_started_again_at_once(tmp_path: Path) -> None:
    item, said, restarts = kept("sleeper", "import time; time.sleep(120)", tmp_path), [], []
    watcher = Supervisor(lambda: [item], said.append, on_restart=lambda: restarts.append(item.process.pid))
    try:
        first_pid = item.process.pid
        await watcher.check_once()
        assert said == [] and restarts == []  # running: left alone
        os.kill(first_pid, signal.SIGKILL)
        while item.process.is_running():
            await asyncio.sleep(0.05)
        await watcher.check_once()
        assert said[0].startswith("! sleeper ended (killed by SIGKILL); starting it again now."), said
        assert item.process.is_running() and restarts == [item.process.pid] != [first_pid]
        item.process.stop()
        await watcher.check_once()  # stopped on purpose: not started again
        assert not item.process.is_running() and len(restarts) == 1
    finally:
        item.process.stop()


async def test_a_process_that_keeps_ending_backs_off_up_to_the_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.05)
    monkeypatch.setattr(supervisor, "MAX_BACKOFF_S", 0.2)
    item, said = kept("crasher", "import sys, time; time.sleep(0.2); sys.exit(3)", tmp_path), []
    watcher = Supervisor(lambda: [item], said.append)
    try:
        for _ in range(400):
            if sum("ended" in line for line in said) >= 5:
                break
            await watcher.check_once()
            await asyncio.sleep(0.02)
        waits = [re.search(r"starting it again (now|in [\d.]+ s)", line)[1] for line in said if "ended" in line][:5]
        assert waits == ["now", "in 0.05 s", "in 0.1 s", "in 0.2 s", "in 0.2 s"], said
        assert all("exit status 3" in line for line in said if "ended" in line)
    finally:
        item.process.stop()
