from studio.v1 import events_pb2

from services.ingest.scheduling.estimates import WorkerRegistry


def beat(worker_id: str, expires_in: float = 10.0) -> events_pb2.WorkerHeartbeat:
    return events_pb2.WorkerHeartbeat(queue="TRAIN", worker_id=worker_id, expires_in_seconds=expires_in)


def test_recording_heartbeats_forgets_workers_that_went_away() -> None:
    registry = WorkerRegistry()
    for n in range(100):  # pods an autoscaler started and stopped, each beating once
        registry.record(beat(f"gone-{n}"), now=float(n))
    registry.record(beat("alive"), now=1000.0)
    assert list(registry._workers["TRAIN"]) == ["alive"]
    assert [w.job_id for w in registry.live("TRAIN", now=1000.0)] == [""]
