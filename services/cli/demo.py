"""`studio demo`: a tenant's whole job over the public API — subject, upload, order, watch,
download — against a running stack, or an embedded one started for the duration."""

from __future__ import annotations

import json
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub
from studio.v1 import common_pb2
from tqdm import tqdm

from services.cli.arguments import is_loopback, port_of
from services.cli.client import StudioClient
from services.cli.failures import fail
from services.cli.order_progress import OrderFailed, Stopwatch, watch_with_progress
from services.cli.output_files import check_out_folder
from services.cli.photo_files import no_photos_message, photos_in
from services.cli.portrait_files import download_portraits
from services.cli.stack import EmbeddedStack, StackPaths, grpc_healthy
from services.cli.tenant_api import public_tls, tenant_client
from services.cli.up import start_stack

# The demo runs on small sample sets (../shared/faces/lisa has 8 photos), below the production minimum.
DEMO_MIN_ACCEPTED_PHOTOS = 1
HEALTH_TIMEOUT_S = 5.0


@dataclass
class DemoResult:
    subject_id: str = ""
    order_id: str = ""
    photos: list[dict] = field(default_factory=list)
    portraits: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    state: str = ""
    photo_set: dict = field(default_factory=dict)
    # The training run: final loss, best step and the validation curve (identity score per step).
    training: dict = field(default_factory=dict)
    # Every position/ETA announcement while the order waited: position, eta_seconds, stage, workers.
    queued: list[dict] = field(default_factory=list)


def pick_photos(photos_dir: Path, headshot: Path | None, as_json: bool) -> list[tuple[Path, int]]:
    """The headshot first, then the references; checked before any stack starts, so a wrong path costs nothing."""
    if not photos_dir.is_dir():
        fail(f"no such folder: {photos_dir}", as_json)
    if headshot is not None and not headshot.is_file():
        fail(f"no such headshot file: {headshot}", as_json)
    files = photos_in(photos_dir)
    if not files:
        fail(no_photos_message(photos_dir), as_json)
    headshot = headshot or files[0]
    references = [p for p in files if p.resolve() != headshot.resolve()]
    return [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)] + [(p, common_pb2.PHOTO_ROLE_REFERENCE) for p in references]


async def run_demo(args) -> DemoResult:
    photos = pick_photos(Path(args.photos), Path(args.headshot) if args.headshot else None, args.json)
    check_out_folder(Path(args.out), args.json)  # found now, not after the whole job
    tls = public_tls(args)
    async with AsyncExitStack() as exits:
        api_key_file = Path(args.api_key_file)
        if tls is None and not await grpc_healthy(args.endpoint):
            if not is_loopback(args.endpoint):  # a stack started here would not be the one asked for
                fail(f"no stack answers at {args.endpoint}", args.json)
            api_key_file = await _start_embedded(args, exits)
        client = tenant_client(args, api_key_file)  # with --ca: a remote TLS stack; the embedded one is plaintext
        exits.push_async_callback(client.close)
        if tls is not None and not await _answers(client):
            fail(f"no stack answers at {args.endpoint} over TLS (trusting --ca {args.ca})", args.json)
        return await _job(client, photos, args)


async def _answers(client: StudioClient) -> bool:
    """Whether the public API answers through the client's channel (its health service, as grpc_healthy asks)."""
    try:
        response = await HealthStub(client.channel).Check(HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S)
    except grpc.aio.AioRpcError:
        return False
    return response.status == HealthCheckResponse.SERVING


async def _start_embedded(args, exits: AsyncExitStack) -> Path:
    data_dir = Path(args.data) if args.data else Path(exits.enter_context(tempfile.TemporaryDirectory()))
    stack = embedded_stack(args, data_dir)
    _note(args, f"no stack answers at {args.endpoint}; starting an embedded one in {data_dir}")
    _note(args, f"demo stack: an order needs {DEMO_MIN_ACCEPTED_PHOTOS} accepted photo(s) and the headshot "
                "(a production stack needs 10; 20 recommended)")
    await start_stack(stack, lambda message: _note(args, message), args.json)
    exits.callback(stack.stop)
    return StackPaths(data_dir).api_key_file


def embedded_stack(args, data_dir: Path) -> EmbeddedStack:
    """The stack the demo starts where none answers: at --endpoint's port, on --base-model (else the tiny model)."""
    base_model = Path(args.base_model) if args.base_model else None
    return EmbeddedStack(data_dir=data_dir, base_model=base_model, public_port=port_of(args.endpoint),
                         min_accepted_photos=DEMO_MIN_ACCEPTED_PHOTOS)


def _note(args, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


async def _job(client: StudioClient, photos: list[tuple[Path, int]], args) -> DemoResult:
    result = DemoResult()
    clock = Stopwatch(result.seconds)
    subject = await client.create_subject(external_ref="demo")
    result.subject_id = subject.subject_id
    total_bytes = sum(path.stat().st_size for path, _ in photos)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="upload", disable=args.json) as bar:
        uploaded = await client.upload_photos(subject.subject_id, photos, on_bytes=bar.update)
    result.photos = [
        {"file": s.filename, "accepted": s.verdict.accepted, "reasons": list(s.verdict.reasons)}
        for s in uploaded.photos
    ]
    verdict = uploaded.set_verdict  # the last batch's answer: the whole set as the server holds it
    result.photo_set = {
        "sufficient": verdict.sufficient, "accepted": verdict.accepted_photos,
        "minimum": verdict.min_accepted_photos, "recommended": verdict.recommended_photos,
        "headshot_accepted": verdict.headshot_accepted, "problems": list(verdict.messages),
    }
    clock.lap("upload_and_check")
    tier = common_pb2.PRIORITY_TIER_EXPRESS if getattr(args, "express", False) else common_pb2.PRIORITY_TIER_STANDARD
    order = await client.create_order(subject.subject_id, args.styles, args.count, tier=tier)
    result.order_id = order.order_id
    try:
        progress = await watch_with_progress(client, order.order_id, len(args.styles) * args.count, args.json, clock)
    except OrderFailed as failed:
        fail(str(failed), args.json, order_id=order.order_id, stage=failed.stage, reason=failed.reason)
    result.queued, result.training = progress.queued, progress.training
    order = await client.get_order(order.order_id)
    result.state = common_pb2.OrderState.Name(order.state)
    result.portraits = [p["file"] for p in await download_portraits(client, order, Path(args.out), args.json)]
    clock.lap("download")
    return result


def print_result(result: DemoResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.__dict__))
        return
    accepted = sum(1 for p in result.photos if p["accepted"])
    print(f"subject {result.subject_id}: {accepted}/{len(result.photos)} photos accepted")
    for photo in result.photos:
        if not photo["accepted"]:
            print(f"  refused {photo['file']}: {', '.join(photo['reasons'])}")
    photo_set = result.photo_set
    if photo_set:
        print(f"photo set: {photo_set['accepted']} accepted (minimum {photo_set['minimum']}, recommended "
              f"{photo_set['recommended']}), headshot {'accepted' if photo_set['headshot_accepted'] else 'missing'}"
              + "".join(f"\n  {problem}" for problem in photo_set["problems"]))
    training = result.training
    if training:
        curve = ", ".join(
            f"step {p['step']} " + ("unscored" if p["identity_score"] < 0 else f"{p['identity_score']:.2f}")
            for p in training["validation"]
        )
        print(f"training: final loss {training['final_loss']:.4f}, delivered step {training['best_step']}"
              + (f"; identity by step: {curve}" if curve else ""))
    print(f"order {result.order_id}: {result.state}, {len(result.portraits)} portraits")
    for path in result.portraits:
        print(f"  {path}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
