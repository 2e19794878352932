from __future__ import annotations

from services.trainer.fleet import gpu_ids, worker_environments


def test_each_worker_sees_only_its_own_gpu_and_listens_on_its_own_port() -> None:
    env = {"STUDIO_LISTEN": "0.0.0.0:50070", "STUDIO_METRICS_PORT": "9100", "STUDIO_TRAINER_GPUS": "0, 2",
           "STUDIO_NATS_URL": "nats://n:4222"}
    gpus = gpu_ids(env)
    workers = worker_environments(env, gpus)
    assert gpus == ["0", "2"]
    assert [w["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "2"]
    assert [w["STUDIO_LISTEN"] for w in workers] == ["0.0.0.0:50070", "0.0.0.0:50071"]
    assert [w["STUDIO_METRICS_PORT"] for w in workers] == ["9100", "9101"]
    assert all(w["STUDIO_NATS_URL"] == "nats://n:4222" and "STUDIO_TRAINER_GPUS" not in w for w in workers)
