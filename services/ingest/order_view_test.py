"""How order events fold into the order view that GetOrder returns."""

from __future__ import annotations

from studio.v1 import common_pb2, events_pb2

from services.ingest.order_view import apply_event


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
