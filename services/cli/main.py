"""The `studio` command: models, up, demo, capacity."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc

from services.cli.arguments import CommandLineRefused, StudioParser, host_and_port, port_number, whole_number
from services.cli.capacity import add_capacity_command
from services.cli.failures import fail, os_error_message, rpc_error_message
from services.cli.order_commands import add_commands as add_order_commands
from services.cli.provenance import register as register_provenance
from services.cli.qa import register as register_qa
from services.cli.stack_guard import StackConflict
from services.cli.styles import add_styles_command
from services.cli.tenant_api import DEFAULT_ENDPOINT, add_ca_option
from services.cli.tenant_commands import add_commands as add_tenant_commands
from services.cli.train import add_parser as add_train_parser

# transformers warns about optional image backends we never use; keep the CLI's output readable.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def cmd_models_tiny(args) -> None:
    from services.common.basemodel import base_model_id
    from services.common.tinymodel import write_tiny_model

    out = write_tiny_model(Path(args.out), seed=args.seed)
    result = {"path": str(out.resolve()), "seed": args.seed, "base_model_id": base_model_id(out)}
    print(json.dumps(result) if args.json else f"tiny model written to {result['path']} ({result['base_model_id']})")


async def _up(args) -> None:
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
    starting.result()  # a failed start has already stopped what it started
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


def cmd_demo(args) -> None:
    from services.cli.demo import print_result, run_demo

    print_result(asyncio.run(run_demo(args)), args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = StudioParser(prog="studio", description="Portrait Studio")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="base models").add_subparsers(dest="models_command", required=True)
    tiny = models.add_parser("tiny", help="write the deterministic tiny random-weight model")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--json", action="store_true")
    tiny.set_defaults(func=cmd_models_tiny)

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

    demo = commands.add_parser("demo", help="run one customer's job through the public API")
    demo.add_argument("--photos", required=True, help="folder of the customer's photos")
    demo.add_argument("--headshot", help="the frontal headshot (default: the first photo)")
    demo.add_argument("--out", default="portraits")
    demo.add_argument("--endpoint", type=host_and_port, default=DEFAULT_ENDPOINT,
                      help="HOST:PORT of a running stack, else where an embedded one listens")
    demo.add_argument("--api-key-file", default="data/secrets/tenant-default.key")
    add_ca_option(demo)  # a remote stack's TLS endpoint; the embedded stack is plaintext
    demo.add_argument("--data", help="state directory for an embedded stack (default: a temporary one)")
    demo.add_argument("--base-model", help="base model for an embedded stack")
    demo.add_argument("--styles", nargs="+", default=["studio-frontal-soft"])
    demo.add_argument("--count", type=whole_number(1), default=2, help="portraits per style")
    demo.add_argument("--express", action="store_true", help="order in the express tier (scheduled first)")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    register_qa(commands)
    add_train_parser(commands)

    add_styles_command(commands)

    add_capacity_command(commands)
    register_provenance(commands)

    from services.cli.vault_commands import add_commands as add_vault_commands

    add_vault_commands(commands)
    add_tenant_commands(commands)
    add_order_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except CommandLineRefused as refused:
        refused.report("--json" in argv)
    as_json = getattr(args, "json", False)
    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit as leaving:  # `raise SystemExit("why")` anywhere: reported as fail() reports it
        if isinstance(leaving.code, str):
            fail(leaving.code, as_json)
        raise
    except grpc.RpcError as error:  # a call the server refused or that found no server: its status and reason
        fail(rpc_error_message(error), as_json)
    except StackConflict as error:
        fail(str(error), as_json)
    except BrokenPipeError:  # the reader went away (`studio styles list | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not raise again
        sys.exit(141)
    except OSError as error:  # a path that cannot be read or written: which one, and why
        fail(os_error_message(error), as_json)


if __name__ == "__main__":
    main()
