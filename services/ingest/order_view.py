"""Keeps the order and subject views in KV up to date from the order event stream.

Uploads and CreateOrder change the same subject records at the same time, so every change here is a
compare-and-set, as theirs are. An event of a deleted subject's order that arrives after the purge is
erased from the stream as it is read."""

from __future__ import annotations

import logging
from contextlib import suppress

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from studio.v1 import common_pb2, events_pb2, state_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest.context import update_record

log = logging.getLogger(__name__)

STATE_BY_EVENT = {
    "queued": common_pb2.ORDER_STATE_QUEUED,
    "training": common_pb2.ORDER_STATE_TRAINING,
    "trained": common_pb2.ORDER_STATE_RENDERING,
    "rendering": common_pb2.ORDER_STATE_RENDERING,
    "done": common_pb2.ORDER_STATE_DONE,
    "failed": common_pb2.ORDER_STATE_FAILED,
}
REPEATING_EVENTS = ("queued", "training", "rendering")
TERMINAL_STATES = (common_pb2.ORDER_STATE_DONE, common_pb2.ORDER_STATE_FAILED)


def apply_event(order: common_pb2.Order, event: events_pb2.OrderEvent) -> None:
    kind = event.WhichOneof("kind")
    if order.state in TERMINAL_STATES or kind is None:
        return
    order.state = STATE_BY_EVENT[kind]
    order.updated_at.CopyFrom(event.at)
    if kind == "rendering":
        order.progress_done = event.rendering.rendered
        if all(p.portrait_id != event.rendering.portrait.portrait_id for p in order.portraits):
            order.portraits.append(event.rendering.portrait)
    elif kind == "done":
        del order.portraits[:]
        order.portraits.extend(event.done.portraits)
        order.progress_done = len(event.done.portraits)
    elif kind == "failed":
        order.failure_stage = event.failed.stage
        order.failure_reason = event.failed.reason


def record_history(record: state_pb2.OrderRecord, event: events_pb2.OrderEvent) -> None:
    """Keep the event in the order's history; progress repeats (training steps, n of m rendered, queue
    position) replace their predecessor, so the history stays short."""
    kind = event.WhichOneof("kind")
    if kind is None:
        return
    if record.history and record.history[-1].WhichOneof("kind") == kind and kind in REPEATING_EVENTS:
        record.history[-1].CopyFrom(event)
    elif not any(past.WhichOneof("kind") in ("done", "failed") for past in record.history):
        record.history.append(event)


async def _record_lora(bus: Bus, event: events_pb2.OrderEvent) -> None:
    """By compare-and-set: uploads and CreateOrder change the same subject record meanwhile. A subject gone is
    left gone."""

    def add_lora(subject: state_pb2.SubjectRecord) -> None:
        subject.lora_keys[event.trained.base_model_id] = event.trained.lora_key

    await update_record(bus, topology.SUBJECTS_BUCKET, event.subject_id, state_pb2.SubjectRecord, add_lora)


async def project_order_events(bus: Bus) -> None:
    await bus.js.add_consumer(topology.EVENTS_STREAM.name, topology.ORDER_VIEW_CONSUMER)

    async def handle(message: Msg) -> None:
        if not await _project(bus, events_pb2.OrderEvent.FromString(message.data)):
            await _erase(bus, message)
        await message.ack()

    await bus.consume(topology.EVENTS_STREAM.name, topology.ORDER_VIEW_CONSUMER.durable_name, handle, batch=32)


async def _project(bus: Bus, event: events_pb2.OrderEvent) -> bool:
    """Fold `event` into its order's view; False for an event of a deleted subject or of an order that no
    longer exists (orders are recorded before their first event and only a deletion removes them)."""
    if bus.guard.is_deleted(event.subject_id):  # a late event must not recreate a purged view
        return False

    def fold(record: state_pb2.OrderRecord) -> None:
        apply_event(record.order, event)
        record_history(record, event)

    if await update_record(bus, topology.ORDERS_BUCKET, event.order_id, state_pb2.OrderRecord, fold) is None:
        return False
    if event.WhichOneof("kind") == "trained":
        await _record_lora(bus, event)
    return True


async def _erase(bus: Bus, message: Msg) -> None:
    """An event published before its subject's deletion can be stored after the purge: the publisher's connection
    held it through a reconnect. It names the subject, so it goes as it arrives."""
    log.info("erasing an event of a deleted order")
    with suppress(NotFoundError):  # erased already (a redelivery)
        await bus.js.delete_msg(topology.EVENTS_STREAM.name, message.metadata.sequence.stream)
