"""`studio tenants create|list|rotate-key|disable|enable|set`: the operator's tenant management.

Talks to ingest's TenantAdmin service on the public endpoint with the operator token (the embedded
stack's DATA/secrets/operator.token); tenant API keys cannot do this. An API key is printed once,
when created or rotated, and is stored nowhere but with the caller."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from studio.v1 import admin_pb2, common_pb2

from services.cli.arguments import whole_number
from services.cli.failures import fail, read_secret_line
from services.cli.stack_file import stack_file_value
from services.cli.tenant_api import DEFAULT_ENDPOINT, add_ca_option, public_tls
from studio_client.admin import AdminClient

QUOTA_OPTIONS = ("max_concurrent_orders", "max_subjects_per_day", "max_photos_per_subject", "max_upload_bytes_per_day")
TENANT_SETTINGS = ("min_accepted_photos", "default_retention_days", "max_photo_age_days")
SETTING_OPTIONS = (*TENANT_SETTINGS, *QUOTA_OPTIONS)
LABEL_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def _tenant_dict(tenant: admin_pb2.Tenant) -> dict:
    return MessageToDict(tenant, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _client(args) -> AdminClient:
    data = Path(args.data)
    endpoint = args.endpoint or stack_file_value(data, args.json, "public_endpoint") or DEFAULT_ENDPOINT
    token_file = Path(args.token_file) if args.token_file else data / "secrets" / "operator.token"
    if not token_file.exists():
        fail(f"no operator token at {token_file} (give --token-file)", args.json)
    tls = public_tls(args)
    return AdminClient(endpoint, read_secret_line(token_file, "operator token", args.json),
                       tls.credentials() if tls else None)


async def _tenant_id(admin: AdminClient, tenant: str) -> str:
    """A tenant id or name, as the operator typed it."""
    for known in await admin.list():
        if tenant in (known.tenant_id, known.name):
            return known.tenant_id
    return tenant  # the server answers NOT_FOUND


async def _run(args) -> dict:
    admin = _client(args)
    try:
        return await COMMANDS[args.tenants_command](admin, args)
    finally:
        await admin.close()


async def _create(admin: AdminClient, args) -> dict:
    settings = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name) is not None}
    response = await admin.create(args.name, cert_identities=args.cert_identity or [], **settings)
    return {"tenant": _tenant_dict(response.tenant), "api_key": response.api_key}


async def _list(admin: AdminClient, args) -> dict:
    return {"tenants": [_tenant_dict(tenant) for tenant in await admin.list()]}


async def _rotate(admin: AdminClient, args) -> dict:
    response = await admin.rotate_key(await _tenant_id(admin, args.tenant))
    return {"tenant": _tenant_dict(response.tenant), "api_key": response.api_key}


async def _disable(admin: AdminClient, args) -> dict:
    tenant = await admin.disable(await _tenant_id(admin, args.tenant), enable=args.tenants_command == "enable")
    return {"tenant": _tenant_dict(tenant)}


async def _set(admin: AdminClient, args) -> dict:
    settings = {name: getattr(args, name) for name in SETTING_OPTIONS if getattr(args, name) is not None}
    if args.visible_label is not None or args.no_visible_label:
        settings["visible_label"] = _visible_label(args)
    tenant = await admin.update(
        await _tenant_id(admin, args.tenant), add_cert_identities=args.add_cert_identity or [],
        remove_cert_identities=args.remove_cert_identity or [], **settings,
    )
    return {"tenant": _tenant_dict(tenant)}


def _visible_label(args) -> common_pb2.VisibleLabel:
    if args.no_visible_label:
        return common_pb2.VisibleLabel(enabled=False)
    corner = common_pb2.LabelCorner.Value(f"LABEL_CORNER_{args.label_corner.upper().replace('-', '_')}")
    return common_pb2.VisibleLabel(enabled=True, text=args.visible_label, corner=corner)


COMMANDS = {"create": _create, "list": _list, "rotate-key": _rotate, "disable": _disable, "enable": _disable,
            "set": _set}


def _print(result: dict) -> None:
    for tenant in result.get("tenants", [result.get("tenant")]):
        state = "disabled" if tenant.get("disabled") else "enabled"
        quotas = ", ".join(f"{name} {value}" for name, value in tenant.get("quotas", {}).items())
        print(f"{tenant['tenant_id']:32} {tenant['name']:24} {state}; {quotas}")
        if own := _own_settings(tenant):
            print(f"{'':32} {'':24} {own}")
    if "api_key" in result:
        print(f"API key (shown once; store it safely): {result['api_key']}")


def _own_settings(tenant: dict) -> str:
    """The settings the operator set (0 means the studio's default, so those are left out)."""
    parts = [f"{name} {tenant[name]}" for name in TENANT_SETTINGS if tenant.get(name)]
    label = tenant.get("visible_label") or {}
    if label.get("enabled"):
        corner = label.get("corner", "").removeprefix("LABEL_CORNER_").lower().replace("_", "-")
        parts.append(f"visible label {label.get('text') or 'AI-generated'!r} {corner}")
    if tenant.get("cert_identities"):
        parts.append("certificate identities " + ", ".join(tenant["cert_identities"]))
    return "; ".join(parts)


def cmd_tenants(args) -> None:
    result = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)


def add_commands(commands: argparse._SubParsersAction) -> None:
    tenants = commands.add_parser("tenants", help="tenants (operator)").add_subparsers(
        dest="tenants_command", required=True)
    create = tenants.add_parser("create", help="a new tenant; prints its API key once")
    create.add_argument("name")
    create.add_argument("--cert-identity", action="append", help="mTLS client certificate name for this tenant")
    _settings(create)
    parsers = [create, tenants.add_parser("list", help="every tenant with its settings and quotas")]
    for verb, text in (("rotate-key", "a new API key; the old one stops working"),
                       ("disable", "refuse every call of the tenant"), ("enable", "accept the tenant's calls again")):
        parsers.append(tenants.add_parser(verb, help=text))
        parsers[-1].add_argument("tenant", help="tenant id or name")
    update = tenants.add_parser("set", help="change settings and quotas (0: the default)")
    parsers.append(update)
    update.add_argument("tenant", help="tenant id or name")
    update.add_argument("--add-cert-identity", action="append")
    update.add_argument("--remove-cert-identity", action="append")
    update.add_argument("--visible-label", metavar="TEXT",
                        help='draw TEXT on delivered portraits ("" = "AI-generated"); off by default')
    update.add_argument("--label-corner", choices=LABEL_CORNERS, default="bottom-right")
    update.add_argument("--no-visible-label", action="store_true", help="stop drawing the visible label")
    _settings(update)
    for parser in parsers:
        parser.add_argument("--endpoint", help="ingest's public endpoint (default: from DATA/stack.json)")
        parser.add_argument("--data", default="data", help="the embedded stack's data dir")
        parser.add_argument("--token-file", help="operator token (default: DATA/secrets/operator.token)")
        add_ca_option(parser)
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(func=cmd_tenants)


def _settings(parser: argparse.ArgumentParser) -> None:
    count = whole_number(0, "the studio's default")
    for name in SETTING_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=count, metavar="N")

