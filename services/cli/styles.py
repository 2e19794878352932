"""`studio styles list [--json]`: the style catalogue, from a running stack's ListStyles when one
answers at --endpoint, else from the catalogue file this installation ships."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from studio.v1 import studio_pb2

from services.cli.client import StudioClient
from services.cli.tenant_api import DEFAULT_API_KEY_FILE, DEFAULT_ENDPOINT, add_ca_option, public_tls
from services.common.styles import catalogue
from studio_client import ClientTls

STACK_TIMEOUT_S = 3.0


async def styles_from_stack(endpoint: str, api_key_file: Path,
                            tls: ClientTls | None) -> list[studio_pb2.StylePreset] | None:
    """The stack's catalogue, or None when no stack answers there (or we hold no key for it)."""
    if not api_key_file.is_file():
        return None
    client = StudioClient(endpoint, api_key_file.read_text().strip(), tls=tls)
    try:
        return await client.list_styles(timeout=STACK_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise SystemExit(f"ListStyles at {endpoint} failed: {error.code().name}: {error.details()}") from error
    finally:
        await client.close()


def list_styles(args) -> None:
    presets = asyncio.run(styles_from_stack(args.endpoint, Path(args.api_key_file), public_tls(args)))
    source = f"stack at {args.endpoint}"
    if presets is None:
        presets, source = [p.as_message() for p in catalogue().values()], "catalogue file"
    if args.json:
        print(json.dumps({"source": source, "styles": [
            MessageToDict(p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for p in presets
        ]}))
        return
    for preset in presets:
        axes = f"{preset.angle}, {preset.lighting}, {preset.expression}, {preset.outfit}"
        print(f"{preset.name:30} {preset.title:62} [{axes}; {preset.scheduler}, {preset.steps} steps]")
    print(f"({len(presets)} styles, from the {source})")


def add_styles_command(commands: argparse._SubParsersAction) -> None:
    styles = commands.add_parser("styles", help="the style catalogue").add_subparsers(
        dest="styles_command", required=True)
    styles_list = styles.add_parser("list", help="list the style presets an order may name")
    styles_list.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="a running stack's public endpoint")
    styles_list.add_argument("--api-key-file", default=DEFAULT_API_KEY_FILE)
    add_ca_option(styles_list)
    styles_list.add_argument("--json", action="store_true")
    styles_list.set_defaults(func=list_styles)
