"""A tenant's orders over the public API: `studio orders create|watch|download|cancel|list|get`."""

from __future__ import annotations

import argparse
from pathlib import Path

from studio.v1 import common_pb2

from services.cli.arguments import whole_number
from services.cli.failures import fail
from services.cli.order_progress import OrderFailed, Stopwatch, watch_with_progress
from services.cli.order_text import order_lines, portrait_line
from services.cli.portrait_files import download_portraits
from services.cli.tenant_api import as_dict, page_lines, page_options, tenant_command
from studio_client import StudioClient

STATES = ["queued", "training", "rendering", "done", "failed"]


def _state(order: common_pb2.Order) -> str:
    return common_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_").lower()


async def _create(client: StudioClient, args) -> dict:
    tier = common_pb2.PRIORITY_TIER_EXPRESS if args.express else common_pb2.PRIORITY_TIER_STANDARD
    order = await client.create_order(args.subject_id, args.style, args.count, idempotency_key=args.idempotency_key,
                                      tier=tier)
    lines = [f"order {order.order_id}: {_state(order)}, {args.count} portrait(s) of each of {', '.join(args.style)}"]
    result = {"order": as_dict(order), "lines": lines}
    if args.wait or args.out:
        result.update(await _follow(client, order, args, lines))
    return result


async def _watch(client: StudioClient, args) -> dict:
    order = await client.get_order(args.order_id)
    lines = [f"order {order.order_id}: {_state(order)}"]
    result = await _follow(client, order, args, lines)
    return {**result, "lines": lines}


async def _follow(client: StudioClient, order: common_pb2.Order, args, lines: list[str]) -> dict:
    """To the order's end with a bar; then its portraits into --out, when given."""
    seconds: dict[str, float] = {}
    try:
        progress = await watch_with_progress(client, order.order_id, len(order.styles) * order.count, args.json,
                                             Stopwatch(seconds))
    except OrderFailed as failed:
        fail(f"order {order.order_id} failed in {failed.stage}: {failed.reason}", args.json,
             order_id=order.order_id, stage=failed.stage, reason=failed.reason)
    order = await client.get_order(order.order_id)
    lines.append(f"order {order.order_id}: {_state(order)}, {len(order.portraits)} portrait(s)")
    result = {"order": as_dict(order), "training": progress.training, "seconds": seconds}
    if args.out:
        result["portraits"] = await download_portraits(client, order, Path(args.out), args.json)
        lines += [portrait_line(p) + f"  {p['file']}" for p in result["portraits"]]
    else:
        lines += [portrait_line(as_dict(p)) for p in order.portraits]
    return result


async def _download(client: StudioClient, args) -> dict:
    order = await client.get_order(args.order_id)
    if order.state != common_pb2.ORDER_STATE_DONE:
        why = f": {order.failure_reason}" if order.failure_reason else "; `studio orders watch` follows it"
        fail(f"order {order.order_id} is {_state(order)}, it has no portraits to download{why}", args.json,
             state=_state(order))
    portraits = await download_portraits(client, order, Path(args.out), args.json)
    lines = [f"{len(portraits)} portrait(s) of order {order.order_id} in {args.out}"]
    return {"order_id": order.order_id, "portraits": portraits,
            "lines": lines + [portrait_line(p) + f"  {p['file']}" for p in portraits]}


async def _cancel(client: StudioClient, args) -> dict:
    order = await client.cancel_order(args.order_id, args.reason)
    line = f"order {order.order_id}: {_state(order)}" + (f" ({order.failure_reason})" if order.failure_reason else "")
    return {"order": as_dict(order), "lines": [line]}


async def _list(client: StudioClient, args) -> dict:
    states = [common_pb2.OrderState.Value(f"ORDER_STATE_{state.upper()}") for state in args.state or []]
    page = await client.list_orders(args.page_size, args.page_token, subject_id=args.subject or "", states=states)
    orders = [as_dict(order) for order in page.orders]
    lines = [f"{o['order_id']}  {o.get('state', '')}  {o.get('subject_id', '')}  {o.get('created_at', '')}"
             for o in orders]
    lines = lines or ["no orders" + (" matching the filters" if args.subject or args.state else "")]
    return {"orders": orders, "next_page_token": page.next_page_token,
            "lines": page_lines(lines, page.next_page_token)}


async def _get(client: StudioClient, args) -> dict:
    response = await client.get_order_with_history(args.order_id)
    history = [as_dict(event) for event in response.history]
    order = as_dict(response.order)
    return {"order": order, "history": history, "lines": order_lines(order, history)}


def add_commands(commands: argparse._SubParsersAction) -> None:
    orders = commands.add_parser("orders", help="the tenant's orders").add_subparsers(
        dest="orders_command", required=True)
    create = tenant_command(orders, "create", "order portraits of a subject", _create)
    create.add_argument("subject_id")
    create.add_argument("--style", action="append", required=True, help="a preset (`studio styles list`); repeat")
    create.add_argument("--count", type=whole_number(1), default=1, help="portraits per style")
    create.add_argument("--express", action="store_true", help="the express tier: scheduled first")
    create.add_argument("--idempotency-key", default="", help="the same key again returns the same order")
    create.add_argument("--wait", action="store_true", help="follow the order to its end")
    create.add_argument("--out", help="wait, then download the portraits into this folder")
    watch = tenant_command(orders, "watch", "follow an order to its end, with progress", _watch)
    watch.add_argument("order_id")
    watch.add_argument("--out", help="then download the portraits into this folder")
    download = tenant_command(orders, "download", "a done order's portraits, into a folder", _download)
    download.add_argument("order_id")
    download.add_argument("--out", required=True, help="folder for the portraits (PNG, owner-only)")
    cancel = tenant_command(orders, "cancel", "stop an order that is not done yet", _cancel)
    cancel.add_argument("order_id")
    cancel.add_argument("--reason", default="", help="kept with the order")
    listing = tenant_command(orders, "list", "the tenant's orders, newest first", _list)
    listing.add_argument("--subject")
    listing.add_argument("--state", action="append", choices=STATES)
    page_options(listing)
    get = tenant_command(orders, "get", "an order and its history", _get)
    get.add_argument("order_id")
