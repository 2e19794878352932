"""`studio demo`: a tenant's whole job over the public API — subject, upload, order, watch,
download — against a running stack, or an embedded one started for the duration."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from studio.v1 import common_pb2, events_pb2, studio_pb2
from tqdm import tqdm

from services.cli.client import StudioClient
from services.cli.failures import read_api_key
from services.cli.stack import EmbeddedStack, StackPaths, grpc_healthy

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
# The demo runs on small sample sets (../shared/faces/lisa has 8 photos), below the production minimum.
DEMO_MIN_ACCEPTED_PHOTOS = 1


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


def pick_photos(photos_dir: Path, headshot: Path | None) -> list[tuple[Path, int]]:
    """The headshot first, then the references; checked before any stack starts, so a wrong path costs nothing."""
    if not photos_dir.is_dir():
        raise SystemExit(f"no such folder: {photos_dir}")
    if headshot is not None and not headshot.is_file():
        raise SystemExit(f"no such headshot file: {headshot}")
    files = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos (.jpg/.png/.webp) in {photos_dir}")
    headshot = headshot or files[0]
    references = [p for p in files if p.resolve() != headshot.resolve()]
    return [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)] + [(p, common_pb2.PHOTO_ROLE_REFERENCE) for p in references]


class Stopwatch:
    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self.started, 3)
        self.started = now


async def run_demo(args) -> DemoResult:
    photos = pick_photos(Path(args.photos), Path(args.headshot) if args.headshot else None)
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found now, not after the whole job
        raise SystemExit(f"--out {args.out} is a file, not a folder")
    async with AsyncExitStack() as exits:
        api_key_file = args.api_key_file
        if not await grpc_healthy(args.endpoint):
            api_key_file = await _start_embedded(args, exits)
        client = StudioClient(args.endpoint, read_api_key(Path(api_key_file), args.json))
        exits.push_async_callback(client.close)
        return await _job(client, photos, args)


async def _start_embedded(args, exits: AsyncExitStack) -> Path:
    data_dir = Path(args.data) if args.data else Path(exits.enter_context(tempfile.TemporaryDirectory()))
    port = int(args.endpoint.rsplit(":", 1)[1])
    stack = EmbeddedStack(
        data_dir=data_dir, base_model=args.base_model, public_port=port, min_accepted_photos=DEMO_MIN_ACCEPTED_PHOTOS
    )
    _note(args, f"no stack answers at {args.endpoint}; starting an embedded one in {data_dir}")
    _note(args, f"demo stack: an order needs {DEMO_MIN_ACCEPTED_PHOTOS} accepted photo(s) and the headshot "
                "(a production stack needs 10; 20 recommended)")
    await stack.start(progress=lambda message: _note(args, message))
    exits.callback(stack.stop)
    return StackPaths(data_dir).api_key_file


def _note(args, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


async def _job(client: StudioClient, photos: list[tuple[Path, int]], args) -> DemoResult:
    result = DemoResult()
    clock = Stopwatch(result.seconds)
    subject = await client.create_subject(external_ref="demo")
    result.subject_id = subject.subject_id
    total_bytes = sum(path.stat().st_size for path, _ in photos)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="upload", disable=args.json) as bar:
        summaries = await client.upload(subject.subject_id, photos, on_bytes=bar.update)
    result.photos = [
        {"file": s.filename, "accepted": s.verdict.accepted, "reasons": list(s.verdict.reasons)} for s in summaries
    ]
    verdict = (await client.stub.GetSubject(
        studio_pb2.GetSubjectRequest(subject_id=subject.subject_id), metadata=client.metadata, timeout=30
    )).subject.set_verdict
    result.photo_set = {
        "sufficient": verdict.sufficient, "accepted": verdict.accepted_photos,
        "minimum": verdict.min_accepted_photos, "recommended": verdict.recommended_photos,
        "headshot_accepted": verdict.headshot_accepted, "problems": list(verdict.messages),
    }
    clock.lap("upload_and_check")
    tier = common_pb2.PRIORITY_TIER_EXPRESS if getattr(args, "express", False) else common_pb2.PRIORITY_TIER_STANDARD
    order = await client.create_order(subject.subject_id, args.styles, args.count, tier=tier)
    result.order_id = order.order_id
    await _watch(client, order.order_id, args, clock, result)
    order = await client.get_order(order.order_id)
    result.state = common_pb2.OrderState.Name(order.state)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for portrait in order.portraits:
        path = out_dir / f"{portrait.portrait_id}.png"
        path.write_bytes(await client.download(order.order_id, portrait.portrait_id))
        result.portraits.append(str(path))
    clock.lap("download")
    return result


async def _watch(client: StudioClient, order_id: str, args, clock: Stopwatch, result: DemoResult) -> None:
    ordered = len(args.styles) * args.count
    bar = tqdm(total=0, desc="queued", disable=args.json)
    stage = "queue"
    async for response in client.watch(order_id):
        event = response.event
        kind = event.WhichOneof("kind")
        if kind == "queued":
            bar.set_postfix_str(queued_status(event.queued), refresh=False)
            _note_queued(args, event.queued)
            result.queued.append({"position": event.queued.position, "eta_seconds": event.queued.eta_seconds,
                                  "stage": event.queued.stage, "workers": event.queued.workers})
        elif kind == "training":
            stage = _switch(bar, clock, stage, "training", event.training.total_steps)
            bar.n = event.training.step
            bar.set_postfix_str(training_postfix(event.training), refresh=False)
        elif kind == "trained":  # rendering starts now: its queue and the first portrait's candidates count too
            result.training = training_summary(event.trained)
            stage = _switch(bar, clock, stage, "rendering", ordered)
        elif kind == "rendering":
            stage = _switch(bar, clock, stage, "rendering", event.rendering.total)
            bar.total = event.rendering.total
            bar.n = event.rendering.rendered
            bar.set_postfix_str("", refresh=False)  # the render queue's position and ETA are past once portraits come
        elif kind == "failed":
            bar.close()
            raise SystemExit(f"order failed at {event.failed.stage}: {event.failed.reason}")
        bar.refresh()
    clock.lap(stage)
    bar.close()


def training_postfix(progress: events_pb2.TrainingProgress) -> str:
    """loss, time left and the validation curve so far, beside the training bar."""
    parts = [f"loss {progress.loss:.4f}", f"ETA {progress.eta_seconds}s"]
    if progress.validation:
        curve = " ".join(_score(point) for point in progress.validation)
        parts.append(f"identity {curve} (best step {progress.best_step})")
    return ", ".join(parts)


def training_summary(done: events_pb2.TrainingDone) -> dict:
    return {
        "seconds": round(done.seconds, 3), "final_loss": round(done.final_loss, 6), "best_step": done.best_step,
        "best_identity_score": round(done.best_identity_score, 4),
        "validation": [
            {"step": p.step, "identity_score": round(p.identity_score, 4), "loss": round(p.loss, 6)}
            for p in done.validation
        ],
    }


def _score(point: events_pb2.ValidationPoint) -> str:
    return f"{point.step}:" + ("unscored" if point.identity_score < 0 else f"{point.identity_score:.2f}")


def queued_status(queued) -> str:
    """'position 3, ETA 4m05s (training starts in 2m30s; 2 workers, 75.0 s per job)'."""
    workers = f"{queued.workers} worker{'s' if queued.workers != 1 else ''}" if queued.workers else "no live worker yet"
    return (f"position {queued.position}, ETA {_duration(queued.eta_seconds)} ({queued.stage or 'work'} starts in "
            f"{_duration(queued.starts_in_seconds)}; {workers}, {queued.service_seconds:.1f} s per job)")


def _duration(seconds: int) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _note_queued(args, queued) -> None:
    if args.json:  # the bar is off: say it on stderr, where --json keeps notes
        _note(args, "queued: " + queued_status(queued))


def _switch(bar: tqdm, clock: Stopwatch, stage: str, new_stage: str, total: int) -> str:
    if stage != new_stage:
        clock.lap(stage)
        bar.reset(total=total)
        bar.set_description(new_stage)
        bar.set_postfix_str("", refresh=False)
    return new_stage


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
