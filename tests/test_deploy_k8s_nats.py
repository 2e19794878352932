"""The NATS configuration the manifests ship runs as a 3-node JetStream cluster, and its monitoring port
answers the query KEDA's nats-jetstream scaler makes with the lag the ScaledObjects scale on."""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request
from pathlib import Path

import nats
import pytest
from studio.v1 import events_pb2

from deploy.k8s import validate
from deploy.k8s.manifests import named
from services.common import topology
from services.common.bus import Bus
from services.common.config import url_with_token
from services.common.launchers.binaries import find_binary
from services.common.launchers.process import ManagedProcess, free_ports, tcp_port_open
from services.common.nats_permissions import SERVICE_USERS, password_env

NODES = 3
READY_TIMEOUT_S = 60.0
QUORUM_DELAY_S = 3.0


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _node_config(shipped: str, store: Path, ports: list[dict[str, int]], index: int) -> str:
    """The shipped nats.conf with loopback addresses and free ports in place of the pod network."""
    mine = ports[index]
    text = shipped.replace("store_dir: /data", f"store_dir: {store}")
    text = text.replace("pid_file: /tmp/nats.pid", f"pid_file: {store}/nats.pid")
    text = re.sub(r"^port: 4222$", f"listen: 127.0.0.1:{mine['client']}", text, flags=re.M)
    text = re.sub(r"^http_port: 8222$", f"http: 127.0.0.1:{mine['monitor']}", text, flags=re.M)
    text = re.sub(r"^(\s+)port: 6222$", rf"\1listen: 127.0.0.1:{mine['cluster']}", text, flags=re.M)
    for node in range(NODES):
        text = text.replace(f"nats://nats-{node}.nats-headless:6222", f"nats://127.0.0.1:{ports[node]['cluster']}")
    # Every pod-network address was replaced (a free port may itself contain "4222", so match whole ports).
    assert "nats-headless" not in text and not re.search(r"(?<![\d.])(4222|8222|6222)(?!\d)", text)
    return text


class Cluster:
    """The shipped configuration's nodes on loopback ports; a node runs once started."""

    def __init__(self, root: Path) -> None:
        shipped = named(validate.build(validate.K8S_DIR / "overlays" / "prod"), "ConfigMap", "nats-config")
        self.config = shipped["data"]["nats.conf"]
        self.root = root
        ports = iter(free_ports(3 * NODES))  # distinct: none is bound until its node starts
        self.ports = [{"client": next(ports), "cluster": next(ports), "monitor": next(ports)} for _ in range(NODES)]
        self.processes: list[ManagedProcess] = []
        # The StatefulSet's env from studio-nats-users: nats.conf reads each service user's password from it.
        self.passwords = {user: f"pw-{user}" for user in SERVICE_USERS}

    def start(self, index: int) -> ManagedProcess:
        store = self.root / f"data-{index}"
        store.mkdir()
        config = self.root / f"nats-{index}.conf"
        config.write_text(_node_config(self.config, store, self.ports, index))
        env = {**os.environ, "POD_NAME": f"nats-{index}", **self._password_env()}
        process = ManagedProcess(f"nats-{index}", [find_binary("nats-server"), "--config", str(config)],
                                 self.root / "logs", env=env)
        process.start()
        self.processes.append(process)
        return process

    async def wait_ready(self) -> None:
        """The pods' startup probe (JetStream is current), then a meta leader every node knows."""
        for process, port in zip(self.processes, self.ports, strict=True):
            url = f"http://127.0.0.1:{port['monitor']}/healthz"
            await process.wait_ready(lambda url=url: asyncio.to_thread(_healthy, url), READY_TIMEOUT_S)
            url = f"http://127.0.0.1:{port['monitor']}/jsz"
            await process.wait_ready(lambda url=url: asyncio.to_thread(_has_meta_leader, url), READY_TIMEOUT_S)

    def _password_env(self) -> dict[str, str]:
        return {password_env(user): password for user, password in self.passwords.items()}

    def client_url(self, index: int, user: str = "privacy") -> str:
        """A service user's URL: the shipped configuration admits no anonymous client."""
        return url_with_token(f"nats://127.0.0.1:{self.ports[index]['client']}", f"{user}:{self.passwords[user]}")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def _has_meta_leader(url: str) -> bool:
    try:
        return bool(_get_json(url).get("meta_cluster", {}).get("leader"))
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path):
    """Nodes not started yet; whichever the test starts are stopped after it."""
    cluster = Cluster(tmp_path)
    yield cluster
    cluster.stop()


@pytest.fixture
async def nats_cluster(cluster):
    for index in range(NODES):
        cluster.start(index)
    await cluster.wait_ready()
    return cluster


def _keda_lag(ports: list[dict[str, int]], stream: str, consumer: str) -> int:
    """What KEDA's nats-jetstream scaler computes: it asks each node of the cluster for
    /jsz?acc=$G&consumers=true&config=true, keeps the node that leads the consumer, and takes
    num_pending + num_ack_pending of that consumer as the lag."""
    query = "/jsz?acc=%24G&consumers=true&config=true"
    for index, port in enumerate(ports):
        account = _get_json(f"http://127.0.0.1:{port['monitor']}{query}")["account_details"][0]
        for found in account.get("stream_detail", []):
            for detail in found.get("consumer_detail", []) if found["name"] == stream else []:
                if detail["name"] == consumer and detail["cluster"]["leader"] == f"nats-{index}":
                    return detail["num_pending"] + detail["num_ack_pending"]
    raise AssertionError(f"no node leads consumer {stream}/{consumer}")


async def test_shipped_nats_config_forms_a_jetstream_cluster_keda_can_read(nats_cluster):
    bus = await Bus.connect(nats_cluster.client_url(1, "ingest"), name="deploy-test")
    try:
        for number in range(3):
            job = events_pb2.TrainJob(job_id=f"train-{number}", order_id=f"order-{number}")
            await bus.publish(topology.TRAIN_SUBJECT, job, msg_id=job.job_id)
        queue = topology.TRAIN_QUEUE
        assert _keda_lag(nats_cluster.ports, queue.stream, queue.durable) == 3
        subscription = await bus.pull(queue)
        [in_progress] = await subscription.fetch(1, timeout=5)
        # A job being worked on still counts, so KEDA keeps its worker: 2 pending + 1 unacknowledged.
        assert _keda_lag(nats_cluster.ports, queue.stream, queue.durable) == 3
        await in_progress.ack_sync()
        assert _keda_lag(nats_cluster.ports, queue.stream, queue.durable) == 2
        assert _keda_lag(nats_cluster.ports, topology.RENDER_QUEUE.stream, topology.RENDER_QUEUE.durable) == 0
        servers = _get_json(f"http://127.0.0.1:{nats_cluster.ports[0]['monitor']}/jsz")
        assert servers["meta_cluster"]["cluster_size"] == NODES
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):  # no anonymous client
            await nats.connect(f"nats://127.0.0.1:{nats_cluster.ports[2]['client']}", max_reconnect_attempts=0,
                               allow_reconnect=False)
    finally:
        await bus.close()


async def test_a_service_started_before_the_cluster_has_a_quorum_declares_once_it_forms(cluster):
    """Pods start in any order: a service whose NATS node has no peers yet keeps declaring until a meta leader is
    elected, then has its topology, and it was created once."""
    alone = cluster.start(0)
    port = cluster.ports[0]["client"]
    await alone.wait_ready(lambda: tcp_port_open("127.0.0.1", port), READY_TIMEOUT_S)
    connecting = asyncio.create_task(Bus.connect(cluster.client_url(0, "faceqa"), name="early-service"))
    await asyncio.sleep(QUORUM_DELAY_S)
    assert not connecting.done(), "declared without a meta leader"
    cluster.start(1)
    cluster.start(2)
    bus = await asyncio.wait_for(connecting, READY_TIMEOUT_S)
    try:
        streams = [info.config.name for info in await bus.js.streams_info()]
        expected = [config.name for config in topology.STREAMS] + [f"KV_{name}" for name in topology.BUCKETS]
        assert sorted(streams) == sorted(expected)
    finally:
        await bus.close()


NATS_UNITS = {"": 1, "K": 1000, "KB": 2**10, "M": 1000**2, "MB": 2**20, "G": 1000**3, "GB": 2**30}  # nats.conf sizes
VOLUME_UNITS = {"Mi": 2**20, "Gi": 2**30}


def _size(text: str, units: dict[str, int]) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", text.strip()).groups()
    return int(number) * units[unit]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_store_budget_fits_one_node_with_room_for_its_raft_logs(overlay):
    """With 3 replicas on 3 nodes each node stores every stream whole: the budget is what one node must hold."""
    manifests = validate.build(validate.K8S_DIR / "overlays" / overlay)
    config = named(manifests, "ConfigMap", "studio-config")["data"]
    nats_conf = named(manifests, "ConfigMap", "nats-config")["data"]["nats.conf"]
    max_file_store = _size(re.search(r"max_file_store:\s*(\S+)", nats_conf).group(1), NATS_UNITS)
    claim = named(manifests, "StatefulSet", "nats")["spec"]["volumeClaimTemplates"][0]
    volume = _size(claim["spec"]["resources"]["requests"]["storage"], VOLUME_UNITS)
    budget = int(config[topology.STORE_BYTES_ENV])
    assert budget <= 0.9 * min(max_file_store, volume), (budget, max_file_store, volume)


async def test_the_shipped_budget_is_reserved_whole_on_every_node_at_three_replicas(nats_cluster, monkeypatch):
    """The ConfigMap's budget is declared on the shipped cluster with every stream and bucket at 3 replicas; twice
    it, which the three nodes together could hold were the data split between them, is refused."""
    config = named(validate.build(validate.K8S_DIR / "overlays" / "prod"), "ConfigMap", "studio-config")["data"]
    budget = int(config[topology.STORE_BYTES_ENV])
    monkeypatch.setenv(topology.REPLICAS_ENV, config[topology.REPLICAS_ENV])
    monkeypatch.setenv(topology.STORE_BYTES_ENV, str(budget))
    bus = await Bus.connect(nats_cluster.client_url(0), name="budget-test")
    try:
        declared = {info.config.name: info.config for info in await bus.js.streams_info()}
        assert {config.num_replicas for config in declared.values()} == {NODES}
        assert sum(config.max_bytes for config in declared.values()) <= budget
        assert all(config.max_bytes > 0 for config in declared.values())
        monkeypatch.setenv(topology.STORE_BYTES_ENV, str(2 * budget))
        with pytest.raises(RuntimeError, match=f"lower {topology.STORE_BYTES_ENV}"):
            await bus.declare()
    finally:
        await bus.close()
