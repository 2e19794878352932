"""`python -m services.trainer.fleet`: one trainer worker per GPU on a multi-GPU host.

Each worker is an ordinary `python -m services.trainer` process that sees only its own GPU
(CUDA_VISIBLE_DEVICES) and takes one job at a time, so a host runs one job per GPU. GPUs come
from STUDIO_TRAINER_GPUS ("0,1,3"), else every GPU torch sees. Worker i listens on the port of
STUDIO_LISTEN plus i. On Kubernetes use one pod per GPU (nvidia.com/gpu: 1) instead.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from services.common.launchers.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 1.0


def gpu_ids(env: Mapping[str, str]) -> list[str]:
    listed = env.get("STUDIO_TRAINER_GPUS", "").strip()
    if listed:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def worker_environments(env: Mapping[str, str], gpus: list[str]) -> list[dict[str, str]]:
    host, _, port = env.get("STUDIO_LISTEN", "127.0.0.1:50070").rpartition(":")
    environments = []
    for index, gpu in enumerate(gpus):
        child = {key: value for key, value in env.items() if key != "STUDIO_TRAINER_GPUS"}
        child.update(CUDA_VISIBLE_DEVICES=gpu, STUDIO_TRAIN_DEVICE="cuda", STUDIO_LISTEN=f"{host}:{int(port) + index}")
        if child.get("STUDIO_METRICS_PORT", "0") != "0":
            child["STUDIO_METRICS_PORT"] = str(int(child["STUDIO_METRICS_PORT"]) + index)
        environments.append(child)
    return environments


def main() -> None:
    gpus = gpu_ids(os.environ)
    if not gpus:
        sys.exit("no GPU found: run `python -m services.trainer` for a CPU worker")
    log_dir = Path(os.environ.get("STUDIO_DATA_DIR", ".")) / "logs"
    workers = [
        ManagedProcess(f"trainer-gpu{gpu}", [sys.executable, "-m", "services.trainer"], log_dir, env=env, cwd=REPO_ROOT)
        for gpu, env in zip(gpus, worker_environments(os.environ, gpus), strict=True)
    ]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    for worker in workers:
        worker.start()
    try:
        while not stopping and all(worker.is_running() for worker in workers):
            time.sleep(POLL_S)
    finally:
        for worker in workers:
            worker.stop()
    if not stopping:
        sys.exit("a trainer worker exited; stopping the others so the supervisor restarts the fleet")


if __name__ == "__main__":
    main()
