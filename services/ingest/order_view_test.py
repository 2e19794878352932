"""How order events fold into the order view that GetOrder returns, and into the subject record."""

from __future__ import annotations

import asyncio
import secrets

from studio.v1 import common_pb2, events_pb2, state_pb2, studio_pb2

from services.common import topology
from services.common.bus import Bus
from services.ingest.context import update_record
from services.ingest.order_view import _project, apply_event


def event(**kind) -> events_pb2.OrderEvent:
    return events_pb2.OrderEvent(order_id="o1", **kind)


def portrait(portrait_id: str) -> common_pb2.Portrait:
    return common_pb2.Portrait(portrait_id=portrait_id, style="studio-frontal-soft")


def test_an_order_moves_through_its_states() -> None:
    order = common_pb2.Order(order_id="o1", state=common_pb2.ORDER_STATE_QUEUED, progress_total=2)
    apply_event(order, event(training=events_pb2.TrainingProgress(step=1, total_steps=8)))
    assert order.state == common_pb2.ORDER_STATE_TRAINING
    apply_event(order, event(trained=events_pb2.TrainingDone(base_model_id="bm-x")))
    assert order.state == common_pb2.ORDER_STATE_RENDERING
    apply_event(order, event(rendering=events_pb2.RenderingProgress(rendered=1, total=2, portrait=portrait("p1"))))
    assert order.progress_done == 1 and [p.portrait_id for p in order.portraits] == ["p1"]
    apply_event(order, event(done=events_pb2.OrderDone(portraits=[portrait("p1"), portrait("p2")])))
    assert order.state == common_pb2.ORDER_STATE_DONE and order.progress_done == 2
    assert [p.portrait_id for p in order.portraits] == ["p1", "p2"]


def test_a_redelivered_render_job_does_not_duplicate_portraits() -> None:
    order = common_pb2.Order(order_id="o1")
    for _ in range(2):  # the same progress event twice, as after a worker restart
        apply_event(order, event(rendering=events_pb2.RenderingProgress(rendered=1, total=1, portrait=portrait("p1"))))
    assert [p.portrait_id for p in order.portraits] == ["p1"]
    apply_event(order, event(done=events_pb2.OrderDone(portraits=[portrait("p1")])))
    assert [p.portrait_id for p in order.portraits] == ["p1"]


def test_terminal_states_are_final() -> None:
    order = common_pb2.Order(order_id="o1")
    apply_event(order, event(failed=events_pb2.OrderFailed(stage="training", reason="gave up")))
    apply_event(order, event(rendering=events_pb2.RenderingProgress(rendered=1, total=1, portrait=portrait("p1"))))
    assert order.state == common_pb2.ORDER_STATE_FAILED
    assert (order.failure_stage, order.failure_reason) == ("training", "gave up")
    assert list(order.portraits) == []


def test_history_folds_repeated_progress_and_stops_at_the_end() -> None:
    from studio.v1 import state_pb2

    from services.ingest.order_view import record_history

    record = state_pb2.OrderRecord()
    for step in (1, 2, 3):
        record_history(record, event(training=events_pb2.TrainingProgress(step=step, total_steps=3)))
    record_history(record, event(trained=events_pb2.TrainingDone(base_model_id="bm-x")))
    for rendered in (1, 2):
        record_history(record, event(rendering=events_pb2.RenderingProgress(rendered=rendered, total=2)))
    record_history(record, event(done=events_pb2.OrderDone()))
    record_history(record, event(failed=events_pb2.OrderFailed(stage="late")))  # after the end: ignored
    assert [e.WhichOneof("kind") for e in record.history] == ["training", "trained", "rendering", "done"]
    assert record.history[0].training.step == 3 and record.history[2].rendering.rendered == 2


async def test_projections_racing_each_other_and_subject_writers_lose_nothing(bus: Bus) -> None:
    """Against a real nats-server: trained events of one order and writers of its subject record at once."""
    subject_id, order_id = f"subj_{secrets.token_hex(10)}", f"order_{secrets.token_hex(10)}"
    subject = state_pb2.SubjectRecord(tenant_id="t", subject=studio_pb2.Subject(subject_id=subject_id))
    await bus.kv_put(topology.SUBJECTS_BUCKET, subject_id, subject)
    await bus.kv_put(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord(
        tenant_id="t", order=common_pb2.Order(order_id=order_id, subject_id=subject_id, progress_total=8)))
    trained = [events_pb2.OrderEvent(order_id=order_id, subject_id=subject_id, trained=events_pb2.TrainingDone(
        base_model_id=f"bm-{n}", lora_key=f"lora-{n}")) for n in range(8)]
    rendered = [events_pb2.OrderEvent(order_id=order_id, subject_id=subject_id, rendering=events_pb2.RenderingProgress(
        rendered=n + 1, total=8, portrait=portrait(f"p{n}"))) for n in range(8)]

    def list_order(n: int):
        return lambda record: record.order_ids.append(f"order-{n}")

    results = await asyncio.gather(*(_project(bus, e) for e in trained + rendered),
                                   *(update_record(bus, topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord,
                                                   list_order(n)) for n in range(8)))
    assert all(results[:16])
    kept = await bus.kv_get(topology.SUBJECTS_BUCKET, subject_id, state_pb2.SubjectRecord)
    assert sorted(kept.lora_keys) == [f"bm-{n}" for n in range(8)]
    assert sorted(kept.order_ids) == [f"order-{n}" for n in range(8)]
    order = (await bus.kv_get(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord)).order
    assert sorted(p.portrait_id for p in order.portraits) == [f"p{n}" for n in range(8)]


async def test_an_event_of_a_missing_order_or_subject_writes_nothing(bus: Bus) -> None:
    subject_id, order_id = f"subj_{secrets.token_hex(10)}", f"order_{secrets.token_hex(10)}"
    event = events_pb2.OrderEvent(order_id=order_id, subject_id=subject_id,
                                  trained=events_pb2.TrainingDone(base_model_id="bm", lora_key="lora"))
    assert not await _project(bus, event)
    await bus.kv_put(topology.ORDERS_BUCKET, order_id, state_pb2.OrderRecord(
        order=common_pb2.Order(order_id=order_id, subject_id=subject_id)))
    assert await _project(bus, event)  # the order is there; its subject record is gone and stays gone
    assert await bus.kv_raw(topology.SUBJECTS_BUCKET, subject_id) is None
