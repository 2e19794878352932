"""Holding jobs for the scheduler: every training and render job is first published to PENDING (one
message per job, on a subject naming queue, tier, tenant, subject and order); ingest's dispatcher
releases it into its work queue when a worker slot frees up (services/ingest/scheduling/)."""

from __future__ import annotations

from dataclasses import dataclass

from studio.v1 import common_pb2, events_pb2

from services.common import topology
from services.common.bus import Bus
from services.common.topology import WorkQueue

EXPRESS, STANDARD = "express", "standard"
TIER_NAMES = {common_pb2.PRIORITY_TIER_EXPRESS: EXPRESS, common_pb2.PRIORITY_TIER_STANDARD: STANDARD,
              common_pb2.PRIORITY_TIER_UNSPECIFIED: STANDARD}
QUEUES_BY_STREAM = {queue.stream: queue for queue in topology.WORK_QUEUES}
STAGE_NAMES = {topology.TRAIN_QUEUE.stream: "training", topology.RENDER_QUEUE.stream: "rendering"}
Job = events_pb2.TrainJob | events_pb2.RenderJob


def job_type(queue: WorkQueue) -> type[Job]:
    return events_pb2.TrainJob if queue is topology.TRAIN_QUEUE else events_pb2.RenderJob


async def hold(bus: Bus, queue: WorkQueue, job: Job) -> None:
    """Idempotent (the job id is the message id): a repeated hold within the dedup window is dropped."""
    subject = topology.pending_subject(queue, TIER_NAMES[job.tier], job.tenant_id, job.subject_id, job.order_id)
    await bus.publish(subject, job, msg_id=job.job_id)


@dataclass(frozen=True)
class HeldJob:
    """A held job as the dispatcher sees it, from its PENDING subject and stream metadata."""

    subject: str
    seq: int
    held_at: float  # unix seconds
    queue: WorkQueue
    express: bool
    tenant_id: str
    subject_id: str
    order_id: str

    @classmethod
    def parse(cls, subject: str, seq: int, held_at: float) -> HeldJob:
        prefix_tokens = topology.PENDING_PREFIX.count(".") + 1
        stream, tier, tenant_id, subject_id, order_id = subject.split(".")[prefix_tokens:]
        return cls(subject, seq, held_at, QUEUES_BY_STREAM[stream], tier == EXPRESS, tenant_id, subject_id, order_id)
