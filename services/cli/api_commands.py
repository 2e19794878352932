"""Tenant commands over the public API: `studio subjects list|export`, `studio orders list|get`."""

from __future__ import annotations

import argparse
import asyncio
import json
import tarfile
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from studio.v1 import common_pb2
from tqdm import tqdm

from services.cli.failures import read_api_key
from services.cli.output_files import whole_file
from studio_client import StudioClient

DEFAULT_ENDPOINT = "127.0.0.1:50051"


def _client(args) -> StudioClient:
    return StudioClient(args.endpoint, read_api_key(Path(args.api_key_file), args.json))


def _as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def _run(args, work) -> None:
    async def run() -> dict:
        client = _client(args)
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


async def _list_subjects(client: StudioClient, args) -> dict:
    page = await client.list_subjects(args.page_size, args.page_token, external_ref=args.external_ref or "")
    subjects = [_as_dict(subject) for subject in page.subjects]
    lines = [f"{s['subject_id']}  {s.get('created_at', '')}  {s.get('external_ref', '')}" for s in subjects]
    lines = lines or ["no subjects" + (f" with external ref {args.external_ref!r}" if args.external_ref else "")]
    if page.next_page_token:
        lines.append(f"more: --page-token {page.next_page_token}")
    return {"subjects": subjects, "next_page_token": page.next_page_token, "lines": lines}


async def _export(client: StudioClient, args) -> dict:
    """The archive holds the customer's photos in clear: written owner-only, and whole or not at all."""
    out = Path(args.out)
    with whole_file(out, args.json, private=True) as handle:
        with tqdm(unit="B", unit_scale=True, desc="export", disable=args.json) as bar:
            await client.export_subject(args.subject_id, handle, on_bytes=bar.update)
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:") as archive:
            names = archive.getnames()
    return {"subject_id": args.subject_id, "out": str(out.resolve()), "bytes": out.stat().st_size, "files": names,
            "lines": [f"{len(names)} files, {out.stat().st_size} bytes written to {out}"]}


async def _list_orders(client: StudioClient, args) -> dict:
    states = [common_pb2.OrderState.Value(f"ORDER_STATE_{state.upper()}") for state in args.state or []]
    page = await client.list_orders(args.page_size, args.page_token, subject_id=args.subject or "", states=states)
    orders = [_as_dict(order) for order in page.orders]
    lines = [f"{o['order_id']}  {o.get('state', '')}  {o.get('subject_id', '')}  {o.get('created_at', '')}"
             for o in orders]
    lines = lines or ["no orders" + (" matching the filters" if args.subject or args.state else "")]
    if page.next_page_token:
        lines.append(f"more: --page-token {page.next_page_token}")
    return {"orders": orders, "next_page_token": page.next_page_token, "lines": lines}


async def _get_order(client: StudioClient, args) -> dict:
    response = await client.get_order_with_history(args.order_id)
    history = [_as_dict(event) for event in response.history]
    order = _as_dict(response.order)
    return {"order": order, "history": history, "lines": _order_lines(order, history)}


def _order_lines(order: dict, history: list[dict]) -> list[str]:
    """What a person asks of an order: where it is, why it failed, what it delivered."""
    lines = [f"{order['order_id']}: {order.get('state', '')}, {order.get('progress_done', 0)} of "
             f"{order.get('progress_total', 0)} portraits",
             f"  subject {order.get('subject_id', '')}; styles {', '.join(order.get('styles', []))}; "
             f"count {order.get('count', 0)}"]
    if order.get("failure_reason"):
        lines.append(f"  failed in {order.get('failure_stage', '?')}: {order['failure_reason']}")
    lines += [f"  {event.get('at', '')}  {_event_text(event)}" for event in history]
    for portrait in order.get("portraits", []):
        score = portrait.get("identity_score", 0)
        likeness = "unscored" if score < 0 else f"identity {score:.2f}"
        lines.append(f"  {portrait['portrait_id']}  {portrait.get('style', '')}  seed {portrait.get('seed', 0)}  "
                     f"{portrait.get('width', 0)}x{portrait.get('height', 0)}  {likeness}")
    return lines


def _event_text(event: dict) -> str:
    if queued := event.get("queued"):
        return (f"queued for {queued.get('stage', '')}: position {queued.get('position', 0)}, "
                f"done in about {queued.get('eta_seconds', 0)} s")
    if training := event.get("training"):
        return f"training step {training.get('step', 0)} of {training.get('total_steps', 0)}, " \
               f"loss {training.get('loss', 0):.3f}"
    if trained := event.get("trained"):
        return f"trained in {trained.get('seconds', 0):.1f} s, best step {trained.get('best_step', 0)}"
    if rendering := event.get("rendering"):
        return f"rendered {rendering.get('rendered', 0)} of {rendering.get('total', 0)}"
    if "done" in event:
        return f"done: {len(event['done'].get('portraits', []))} portraits"
    failed = event.get("failed", {})
    return f"failed in {failed.get('stage', '?')}: {failed.get('reason', '')}"


def _tenant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    parser.add_argument("--api-key-file", default="data/secrets/tenant-default.key")
    parser.add_argument("--json", action="store_true")


def _page_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--page-token", default="")


def add_subject_commands(subjects: argparse._SubParsersAction) -> None:
    listing = subjects.add_parser("list", help="the tenant's subjects, newest first")
    listing.add_argument("--external-ref")
    _page_options(listing)
    _tenant_options(listing)
    listing.set_defaults(func=lambda args: _run(args, _list_subjects))
    export = subjects.add_parser("export", help="everything held about a subject, as a tar archive")
    export.add_argument("subject_id")
    export.add_argument("--out", required=True, help="archive file to write")
    _tenant_options(export)
    export.set_defaults(func=lambda args: _run(args, _export))


def add_commands(commands: argparse._SubParsersAction) -> None:
    orders = commands.add_parser("orders", help="the tenant's orders").add_subparsers(
        dest="orders_command", required=True)
    listing = orders.add_parser("list", help="the tenant's orders, newest first")
    listing.add_argument("--subject")
    listing.add_argument("--state", action="append", choices=["queued", "training", "rendering", "done", "failed"])
    _page_options(listing)
    _tenant_options(listing)
    listing.set_defaults(func=lambda args: _run(args, _list_orders))
    get = orders.add_parser("get", help="an order and its history")
    get.add_argument("order_id")
    _tenant_options(get)
    get.set_defaults(func=lambda args: _run(args, _get_order))
