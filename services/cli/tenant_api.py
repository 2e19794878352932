"""What every tenant command over the public API shares: its options, its client, and how it prints."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from services.cli.arguments import whole_number
from services.cli.failures import read_api_key
from studio_client import StudioClient

DEFAULT_ENDPOINT = "127.0.0.1:50051"
DEFAULT_API_KEY_FILE = "data/secrets/tenant-default.key"

TenantCall = Callable[[StudioClient, argparse.Namespace], Awaitable[dict]]


def as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def run_tenant_call(args: argparse.Namespace, work: TenantCall) -> None:
    """Run WORK with a client; print its dict as JSON with --json, else its "lines"."""

    async def run() -> dict:
        client = StudioClient(args.endpoint, read_api_key(Path(args.api_key_file), args.json))
        try:
            return await work(client, args)
        finally:
            await client.close()

    result = asyncio.run(run())  # a refused call ends in services/cli/main.py, as every command's does
    if args.json:
        print(json.dumps(result))
    else:
        for line in result.pop("lines", []):
            print(line)


def tenant_command(parsers: argparse._SubParsersAction, name: str, help_text: str,
                   work: TenantCall) -> argparse.ArgumentParser:
    """A subcommand with the tenant options (--endpoint, --api-key-file, --json) that runs WORK."""
    parser = parsers.add_parser(name, help=help_text)
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    parser.add_argument("--api-key-file", default=DEFAULT_API_KEY_FILE)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=lambda args: run_tenant_call(args, work))
    return parser


def page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=whole_number(1), default=20, help="at most this many (the server caps it)")
    parser.add_argument("--page-token", default="")


def page_lines(lines: list[str], next_page_token: str) -> list[str]:
    return lines + ([f"more: --page-token {next_page_token}"] if next_page_token else [])
