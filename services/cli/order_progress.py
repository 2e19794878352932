"""Following an order to its end: a progress bar per stage (queue, training, rendering), the queue's
position and ETA, the training loss and identity curve; shared by `studio demo` and `studio orders`."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from studio.v1 import events_pb2
from tqdm import tqdm

from studio_client import StudioClient


class Stopwatch:
    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self.started, 3)
        self.started = now



class OrderFailed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"order failed at {stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass
class OrderProgress:
    # Every position/ETA announcement while the order waited: position, eta_seconds, stage, workers.
    queued: list[dict] = field(default_factory=list)
    # The training run: final loss, best step and the validation curve (identity score per step).
    training: dict = field(default_factory=dict)


async def watch_with_progress(client: StudioClient, order_id: str, ordered: int, as_json: bool,
                              clock: Stopwatch) -> OrderProgress:
    """Follow the order to its end with a bar per stage (none with --json; queue notes go to stderr then);
    OrderFailed if it fails. CLOCK gets a lap per stage."""
    result = OrderProgress()
    bar = tqdm(total=0, desc="queued", disable=as_json)
    stage = "queue"
    async for response in client.watch(order_id):
        event = response.event
        kind = event.WhichOneof("kind")
        if kind == "queued":
            bar.set_postfix_str(queued_status(event.queued), refresh=False)
            _note_queued(as_json, event.queued)
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
            raise OrderFailed(event.failed.stage, event.failed.reason)
        bar.refresh()
    clock.lap(stage)
    bar.close()
    return result


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


def _note_queued(as_json: bool, queued) -> None:
    if as_json:  # the bar is off: say it on stderr, where --json keeps notes
        print("queued: " + queued_status(queued), file=sys.stderr, flush=True)


def _switch(bar: tqdm, clock: Stopwatch, stage: str, new_stage: str, total: int) -> str:
    if stage != new_stage:
        clock.lap(stage)
        bar.reset(total=total)
        bar.set_description(new_stage)
        bar.set_postfix_str("", refresh=False)
    return new_stage
