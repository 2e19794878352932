"""Publishing order events (the WatchOrder stream) from any service."""

from __future__ import annotations

from studio.v1 import events_pb2

from services.common.bus import Bus
from services.common.topology import order_events_subject


async def publish_order_event(bus: Bus, order_id: str, tenant_id: str, subject_id: str, **kind) -> None:
    """kind: exactly one of the OrderEvent oneof fields, e.g. training=TrainingProgress(...).
    Nothing is announced for a subject being deleted: the event stream must not name it again."""
    if bus.guard.is_deleted(subject_id):
        return
    event = events_pb2.OrderEvent(order_id=order_id, tenant_id=tenant_id, subject_id=subject_id, **kind)
    event.at.GetCurrentTime()
    await bus.publish(order_events_subject(order_id), event)
