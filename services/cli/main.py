"""The `studio` command: models, up, demo, capacity."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grpc

from services.cli.arguments import CommandLineRefused, StudioParser, host_and_port, whole_number
from services.cli.capacity import add_capacity_command
from services.cli.failures import fail, fail_unexpected, os_error_message, rpc_error_message
from services.cli.models import add_models_command
from services.cli.order_commands import add_commands as add_order_commands
from services.cli.provenance import register as register_provenance
from services.cli.qa import register as register_qa
from services.cli.stack_guard import StackConflict
from services.cli.styles import add_styles_command
from services.cli.tenant_api import DEFAULT_ENDPOINT, add_ca_option
from services.cli.tenant_commands import add_commands as add_tenant_commands
from services.cli.train import add_parser as add_train_parser
from services.cli.up import add_up_command

# transformers warns about optional image backends we never use; keep the CLI's output readable.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def cmd_demo(args) -> None:
    from services.cli.demo import print_result, run_demo

    print_result(asyncio.run(run_demo(args)), args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = StudioParser(prog="studio", description="Portrait Studio")
    commands = parser.add_subparsers(dest="command", required=True)

    add_models_command(commands)

    add_up_command(commands)

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
    except Exception as error:  # what no command expected: its type and message in one line (STUDIO_DEBUG=1: traceback)
        fail_unexpected(error, as_json)


if __name__ == "__main__":
    main()
