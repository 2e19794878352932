"""How the deployment scales: KEDA's triggers read the bus topology's consumers, render scalers add a pod per
renderer's jobs, and every purging service runs a pod when a deletion waits for its purge."""

from __future__ import annotations

import json
import secrets
import urllib.request

import pytest
from studio.v1 import events_pb2

from deploy.k8s import validate
from deploy.k8s.manifests import Manifest, named, of_kind
from services.common import topology
from services.common.bus import Bus
from services.common.launchers.nats import NatsServer
from services.common.topology import DELETIONS_STREAM, PURGING_SERVICES, RENDER_QUEUE, TRAIN_QUEUE, purge_consumer


@pytest.fixture(scope="module")
def built() -> dict[str, list[Manifest]]:
    return {overlay.name: validate.build(overlay) for overlay in validate.OVERLAYS}


def test_render_scalers_add_a_pod_per_renderer_workers_jobs(built):
    """A renderer pod runs STUDIO_RENDER_WORKERS jobs at once against one Triton: both scale per that many jobs."""
    config = next(m for m in of_kind(built["prod"], "ConfigMap") if m["metadata"]["name"] == "studio-config")
    workers = config["data"]["STUDIO_RENDER_WORKERS"]
    assert int(workers) > 1
    scaled = {m["metadata"]["name"]: m["spec"] for m in of_kind(built["prod"], "ScaledObject")}
    for name in ("renderer", "tritonserver"):
        assert {trigger["metadata"]["lagThreshold"] for trigger in scaled[name]["triggers"]} == {workers}, name
    training = [trigger for trigger in scaled["trainer"]["triggers"] if trigger["metadata"]["stream"] != "DELETIONS"]
    assert {trigger["metadata"]["lagThreshold"] for trigger in training} == {"1"}  # one GPU per training job


def test_waiting_deletions_start_one_trainer_not_one_each(built):
    scaled = {m["metadata"]["name"]: m["spec"] for m in of_kind(built["prod"], "ScaledObject")}
    purge = next(t for t in scaled["trainer"]["triggers"] if t["metadata"]["stream"] == "DELETIONS")
    assert int(purge["metadata"]["lagThreshold"]) >= 100 and purge["metadata"]["activationLagThreshold"] == "0"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_purging_service_runs_a_pod_when_a_deletion_waits_for_it(built, overlay):
    """The vault certifies a deletion once each of PURGING_SERVICES confirmed its purge, which runs in that service's
    pods: each keeps one, or (scaled to zero) is started by the lag of its purge consumer from the first deletion."""
    manifests = built[overlay]
    scalers = {m["spec"]["scaleTargetRef"]["name"]: m["spec"] for m in of_kind(manifests, "ScaledObject")}
    for service in PURGING_SERVICES:
        assert named(manifests, "Deployment", service) is not None, service
        spec = scalers.get(service)
        if spec is None:
            assert named(manifests, "Deployment", service)["spec"].get("replicas", 1) >= 1, service
            continue
        if spec.get("minReplicaCount", 0) >= 1:
            continue
        wakers = [t["metadata"] for t in spec["triggers"] if t["metadata"]["stream"] == DELETIONS_STREAM.name
                  and t["metadata"]["consumer"] == purge_consumer(service).durable_name]
        assert [w.get("activationLagThreshold", "0") for w in wakers] == ["0"], service
    assert scalers["trainer"]["minReplicaCount"] == 0  # the case this is about


def test_scalers_use_the_bus_topology_and_trainer_scales_to_zero(built):
    scaled = {m["metadata"]["name"]: m["spec"] for m in of_kind(built["prod"], "ScaledObject")}
    trainer_trigger = scaled["trainer"]["triggers"][0]["metadata"]
    assert (trainer_trigger["stream"], trainer_trigger["consumer"]) == (TRAIN_QUEUE.stream, TRAIN_QUEUE.durable)
    render_trigger = scaled["renderer"]["triggers"][0]["metadata"]
    assert (render_trigger["stream"], render_trigger["consumer"]) == (RENDER_QUEUE.stream, RENDER_QUEUE.durable)
    assert scaled["trainer"]["minReplicaCount"] == 0


def _keda_lag(monitor_url: str, stream: str, consumer: str) -> int:
    """What KEDA's nats-jetstream scaler reads (tests/test_deploy_k8s_nats.py does so on a cluster): the consumer's
    num_pending + num_ack_pending from the monitoring endpoint."""
    with urllib.request.urlopen(f"{monitor_url}/jsz?acc=%24G&consumers=true&config=true", timeout=5) as response:
        account = json.loads(response.read())["account_details"][0]
    [detail] = [detail for found in account.get("stream_detail", []) if found["name"] == stream
                for detail in found.get("consumer_detail", []) if detail["name"] == consumer]
    return detail["num_pending"] + detail["num_ack_pending"]


async def test_a_deletion_the_trainer_has_not_purged_is_lag_that_starts_one(built, bus: Bus, nats_server: NatsServer):
    [trigger] = [t["metadata"] for t in named(built["prod"], "ScaledObject", "trainer")["spec"]["triggers"]
                 if t["metadata"]["stream"] == DELETIONS_STREAM.name]
    before = _keda_lag(nats_server.monitor_url, trigger["stream"], trigger["consumer"])
    deletion_id = f"deletion_{secrets.token_hex(6)}"
    request = events_pb2.DeletionRequested(deletion_id=deletion_id, tenant_id="t", subject_id="subj_keda")
    await bus.publish(topology.deletion_requested_subject(deletion_id), request, msg_id=deletion_id)
    try:
        lag = _keda_lag(nats_server.monitor_url, trigger["stream"], trigger["consumer"])
    finally:
        await bus.purge_subject(DELETIONS_STREAM.name, topology.deletion_subjects(deletion_id))
    assert lag == before + 1 > int(trigger["activationLagThreshold"])
