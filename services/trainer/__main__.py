"""python -m services.trainer: a LoRA training worker with its status API."""

from __future__ import annotations

import asyncio
import os

import grpc
from studio.v1 import faceqa_pb2_grpc, trainer_pb2, trainer_pb2_grpc

from services.common import topology
from services.common.basemodel import base_model_id
from services.common.config import Settings
from services.common.grpc_server import configure_logging, serve
from services.common.purge import PurgeListener
from services.common.runtime import Runtime
from services.common.tls import internal_channel, internal_server_credentials
from services.common.workqueue import WorkerState, run_worker
from services.trainer.job_keys import rekey_at_start
from services.trainer.purge import purge_handler
from services.trainer.worker import TrainerOptions, TrainerWorker


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, worker: TrainerWorker) -> None:
        self.worker = worker

    async def GetTrainerStatus(self, request, context):
        return trainer_pb2.GetTrainerStatusResponse(
            status=self.worker.state.as_status(_device()), base_model_id=self.worker.base_model_id,
        )


def _device() -> str:
    """The device this worker trains on; a fleet worker also names the one GPU it sees."""
    import torch

    device = os.environ.get("STUDIO_TRAIN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"{device} (GPU {visible})" if device.startswith("cuda") and visible else device


async def main() -> None:
    settings = Settings.from_env("trainer")
    configure_logging(settings.service_name)
    runtime = await Runtime.open(settings)
    bus = runtime.bus
    base_model = settings.require("base_model")
    faceqa = internal_channel(settings.require("faceqa_addr"))  # validation scoring
    worker = TrainerWorker(
        bus=bus, sealed=runtime.sealed,
        base_model=base_model, base_model_id=base_model_id(base_model), state=WorkerState(),
        faceqa=faceqa_pb2_grpc.FaceQAStub(faceqa), options=TrainerOptions.from_env(),
    )

    def register(server: grpc.aio.Server) -> list[str]:
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(worker), server)
        return [trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name]

    purges = PurgeListener(bus, "trainer", runtime.sealed, purge_handler(bus, runtime.sealed))
    try:
        await serve("trainer", settings.listen, settings.metrics_port, register, background=[
            purges.run,
            purges.then(lambda: run_worker(bus, topology.TRAIN_QUEUE, worker.handle, worker.on_failure, worker.state)),
            # Once every deletion on record is known here: a deleted subject's old record is erased, not re-keyed.
            purges.then(lambda: rekey_at_start(bus, runtime.sealed)),
        ], credentials=internal_server_credentials())
    finally:
        await faceqa.close()
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
