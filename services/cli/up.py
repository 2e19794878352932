"""`studio up`: the whole stack on this machine until Ctrl-C / SIGTERM; a start that fails is told in one line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.arguments import port_number, whole_number
from services.cli.failures import fail, unexpected_message
from services.common.launchers.process import ProcessStartError

if TYPE_CHECKING:
    from services.cli.stack import EmbeddedStack


def start_failure_message(error: ProcessStartError) -> str:
    """'the stack did not start: ingest exited before it was ready (exit code 1); log /d/logs/ingest.log; its last
    line: …': one line, from the launcher's message, which goes on with the log's last lines."""
    head, _, tail = str(error).partition("\n")
    head = head.replace("; last lines of ", "; log ").removesuffix(":")
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    said = unexpected_message(RuntimeError(last)).removeprefix("RuntimeError: ") if last else ""
    return f"the stack did not start: {head}" + (f"; its last line: {said}" if said else "")


async def start_stack(stack: EmbeddedStack, progress, as_json: bool) -> None:
    """stack.start, with a process that did not come up reported in one line (what it started is stopped)."""
    try:
        await stack.start(progress=progress)
    except ProcessStartError as error:
        fail(start_failure_message(error), as_json)


async def _up(args: argparse.Namespace) -> None:
    from services.cli.stack import EmbeddedStack
    from services.cli.supervisor import Supervisor, stack_processes

    stack = EmbeddedStack(
        data_dir=Path(args.data), base_model=Path(args.base_model) if args.base_model else None,
        public_port=args.port, blob_url=args.blob_url, min_accepted_photos=args.min_accepted_photos,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    starting = asyncio.create_task(stack.start(progress=lambda message: print(f"… {message}", flush=True)))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # Ctrl-C while starting: stop what did start
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        stack.stop()
        return
    try:
        starting.result()  # a failed start has already stopped what it started
    except ProcessStartError as error:
        fail(start_failure_message(error), as_json=False)
    supervisor = Supervisor(lambda: stack_processes(stack), say=lambda line: print(line, flush=True),
                            on_restart=stack.write_stack_file)
    supervising = asyncio.create_task(supervisor.run())
    try:
        print(f"Portrait Studio is up. Public gRPC endpoint: {stack.public_endpoint}")
        print(f"Tenant API key (default tenant): {stack.paths.api_key_file}")
        print(f"Logs: {stack.paths.logs}. A process that ends is started again. Ctrl-C stops everything.",
              flush=True)
        await stopper
    finally:
        supervising.cancel()  # before the stop: nothing may start again what is being stopped
        await asyncio.gather(supervising, return_exceptions=True)
        stack.stop()  # first: printing can fail when whoever reads our output is gone
        print("stopped", flush=True)


def add_up_command(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser("up", help="start the whole stack on this machine")
    up.add_argument("--data", default="data", help="state directory (default ./data)")
    up.add_argument("--base-model", help="diffusers folder (default: the tiny model)")
    up.add_argument("--port", type=port_number, default=50051, help="public gRPC port")
    up.add_argument("--blob-url", default=os.environ.get("STUDIO_BLOB_URL"),
                    help="s3://ACCESS:SECRET@host:port/bucket (default: STUDIO_BLOB_URL, which keeps the secret out "
                         "of the process list, else a directory in --data)")
    up.add_argument("--min-accepted-photos", type=whole_number(0, "the default, 10"),
                    help="accepted photos an order needs (default 10)")
    up.set_defaults(func=lambda args: asyncio.run(_up(args)))
