"""What every tenant command over the public API shares: its options, its client, and how it prints."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from services.cli.arguments import whole_number
from services.cli.failures import read_api_key, read_ca_certificate
from studio_client import ClientTls, StudioClient

DEFAULT_ENDPOINT = "127.0.0.1:50051"
DEFAULT_API_KEY_FILE = "data/secrets/tenant-default.key"

TenantCall = Callable[[StudioClient, argparse.Namespace], Awaitable[dict]]


def as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def run_tenant_call(args: argparse.Namespace, work: TenantCall) -> None:
    """Run WORK with a client; print its dict as JSON with --json, else its "lines"."""

    async def run() -> dict:
        client = tenant_client(args)
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


def tenant_client(args: argparse.Namespace, api_key_file: Path | None = None) -> StudioClient:
    """A client of the public API from the tenant options: over TLS when --ca is given."""
    api_key = read_api_key(api_key_file or Path(args.api_key_file), args.json)
    return StudioClient(args.endpoint, api_key, tls=public_tls(args))


def public_tls(args: argparse.Namespace) -> ClientTls | None:
    """TLS to the public endpoint, trusting the --ca certificate; None (plaintext) without --ca."""
    return ClientTls(read_ca_certificate(Path(args.ca), args.json)) if args.ca else None


def add_ca_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", metavar="FILE",
                        help="the CA certificate (PEM) that signed the public endpoint's certificate: connect over TLS")


def add_tenant_options(parser: argparse.ArgumentParser) -> None:
    """--endpoint, --api-key-file, --ca and --json: what a command over the public API needs."""
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    parser.add_argument("--api-key-file", default=DEFAULT_API_KEY_FILE)
    add_ca_option(parser)
    parser.add_argument("--json", action="store_true")


def tenant_command(parsers: argparse._SubParsersAction, name: str, help_text: str,
                   work: TenantCall) -> argparse.ArgumentParser:
    """A subcommand with the tenant options (add_tenant_options) that runs WORK."""
    parser = parsers.add_parser(name, help=help_text)
    add_tenant_options(parser)
    parser.set_defaults(func=lambda args: run_tenant_call(args, work))
    return parser


def page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=whole_number(1), default=20, help="at most this many (the server caps it)")
    parser.add_argument("--page-token", default="")


def page_lines(lines: list[str], next_page_token: str) -> list[str]:
    return lines + ([f"more: --page-token {next_page_token}"] if next_page_token else [])
