"""`studio up` keeps its stack running: a process that ends by itself (a crash, an out-of-memory kill) is
started again with the same command, so on the same address, as Kubernetes restarts a crashed container.
Restarts back off like Kubernetes' CrashLoopBackOff: at once after a process that ran a while, then 1 s,
2 s, ... up to 60 s while it keeps ending soon after each start. Orders in flight wait in JetStream for
the process to return; nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.cli.stack import SERVICE_READY_TIMEOUT_S, EmbeddedStack, all_healthy
from services.common.launchers import nats as nats_launcher
from services.common.launchers import triton as triton_launcher
from services.common.launchers.process import ManagedProcess, ProcessStartError

POLL_S = 1.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
RAN_A_WHILE_S = 300.0  # a process that ran this long before it ended starts again at once


@dataclass
class Supervised:
    name: str
    process: ManagedProcess
    ready: Callable[[], Awaitable[bool]]
    ready_timeout_s: float


def stack_processes(stack: EmbeddedStack) -> list[Supervised]:
    assert stack.nats and stack.triton
    nats, triton = stack.nats, stack.triton
    # Triton's shared-memory regions are kept private by the server's own ShmGuard (launchers/triton.py), which runs
    # under `studio demo` too, and across this supervisor's restarts of the process.
    supervised = [Supervised("nats-server", nats.process, nats.ready, nats_launcher.READY_TIMEOUT),
                  Supervised("tritonserver", triton.process, triton.ready, triton_launcher.READY_TIMEOUT)]
    for service, process in stack.processes.items():
        addresses = stack.instances[service]
        supervised.append(Supervised(service, process, lambda addresses=addresses: all_healthy(addresses),
                                     SERVICE_READY_TIMEOUT_S))
    return supervised


def exit_text(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class Supervisor:
    """`processes` lists what to keep running (read at every check: a restart may replace them);
    `on_restart` runs after each successful restart; `say` reports every ending and restart."""

    def __init__(self, processes: Callable[[], list[Supervised]], say: Callable[[str], None],
                 on_restart: Callable[[], None] = lambda: None) -> None:
        self.processes = processes
        self.say = say
        self.on_restart = on_restart
        self._backoff_s: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._due: dict[str, float] = {}  # when each process that ended starts again

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.check_once()
            except Exception as error:  # noqa: BLE001 - one bad check must not end the supervision
                self.say(f"! could not check or restart the stack's processes: {error}")

    async def check_once(self) -> None:
        for item in self.processes():
            code = item.process.ended_by_itself()
            if item.name not in self._due and code is not None:
                self._schedule(item, exit_text(code))
            if item.name in self._due and time.monotonic() >= self._due[item.name]:
                await self._restart(item)

    def _schedule(self, item: Supervised, why: str) -> None:
        now = time.monotonic()
        if now - self._started_at.get(item.name, -RAN_A_WHILE_S) >= RAN_A_WHILE_S:
            backoff = 0.0
        else:
            backoff = min(max(2 * self._backoff_s.get(item.name, 0.0), FIRST_BACKOFF_S), MAX_BACKOFF_S)
        self._backoff_s[item.name], self._due[item.name] = backoff, now + backoff
        when = "now" if backoff == 0 else f"in {backoff:g} s"
        self.say(f"! {item.name} ended ({why}); starting it again {when}. Its log: {item.process.log_path}")

    async def _restart(self, item: Supervised) -> None:
        del self._due[item.name]
        self._started_at[item.name] = time.monotonic()
        try:
            item.process.restart()
            await item.process.wait_ready(item.ready, item.ready_timeout_s)
        except ProcessStartError as error:
            item.process.stop()
            self._schedule(item, f"did not start again: {str(error).splitlines()[0]}")
            return
        self.on_restart()
        self.say(f"… {item.name} is running again (pid {item.process.pid})")
