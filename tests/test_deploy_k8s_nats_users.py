"""Production NATS users (services/common/nats_permissions.py): the shipped nats.conf holds the rendered users,
each service pod gets its own user and only its own password, and a real nats-server with those users refuses a
service publishing another's deletion confirmation or a deletion request while the services work as before."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from studio.v1 import events_pb2

from deploy.k8s import validate
from deploy.k8s.manifests import named
from services.common import topology
from services.common.bus import Bus
from services.common.config import NATS_USER_ENV, url_with_token
from services.common.launchers.binaries import find_binary
from services.common.launchers.process import ManagedProcess, free_ports
from services.common.nats_permissions import SERVICE_USERS, password_env, render_authorization

READY_TIMEOUT_S = 30.0
REFUSED_WAIT_S = 1.0


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request) -> list[dict]:
    return validate.build(validate.K8S_DIR / "overlays" / request.param)


def test_the_shipped_nats_conf_holds_the_rendered_users(built):
    conf = named(built, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert render_authorization() in conf
    assert validate.nats_user_problems(built) == []
    built = copy.deepcopy(built)
    named(built, "ConfigMap", "nats-config")["data"]["nats.conf"] = conf.replace("confirmed.faceqa", "confirmed.x", 1)
    assert [problem.rule for problem in validate.nats_user_problems(built)] == ["nats-users"]


def _env(container: dict) -> dict[str, dict]:
    return {env["name"]: env for env in container.get("env") or []}


def test_each_service_has_its_own_user_and_only_its_own_password(built):
    for service in SERVICE_USERS:
        [container] = named(built, "Deployment", service)["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        assert env["STUDIO_NATS_USER"]["value"] == service
        key = env["STUDIO_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert key == {"name": validate.NATS_USERS_SECRET, "key": service}
        from_users = [e for e in env.values() if (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name")
                      == validate.NATS_USERS_SECRET]
        assert len(from_users) == 1, f"{service} reads more of the NATS users' Secret"


def test_the_nats_servers_get_every_password(built):
    nats_container = named(built, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    env = _env(nats_container)
    for service in SERVICE_USERS:
        key = env[password_env(service)]["valueFrom"]["secretKeyRef"]
        assert key == {"name": validate.NATS_USERS_SECRET, "key": service}


def test_a_pod_reading_another_services_password_is_a_problem(built):
    built = copy.deepcopy(built)
    [container] = named(built, "Deployment", "trainer")["spec"]["template"]["spec"]["containers"]
    container["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": validate.NATS_USERS_SECRET,
                                                                         "key": "renderer"}}})
    assert [problem.resource for problem in validate.nats_user_problems(built)] == ["Deployment/trainer"]


@dataclass
class UsersServer:
    address: str
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return url_with_token(self.address, f"{user}:{self.passwords[user]}")


@pytest.fixture
async def users_server(tmp_path: Path) -> AsyncIterator[UsersServer]:
    """A nats-server with JetStream and the rendered authorization block, its passwords in its environment."""
    port, monitor = free_ports(2)
    config = tmp_path / "nats.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
                      f"jetstream {{\n  store_dir: {tmp_path / 'data'}\n}}\n{render_authorization()}")
    passwords = {user: f"pw-{user}-{os.urandom(6).hex()}" for user in SERVICE_USERS}
    env = {**os.environ, **{password_env(user): password for user, password in passwords.items()}}
    process = ManagedProcess(f"nats-users-{port}", [find_binary("nats-server"), "-c", str(config)], tmp_path / "logs",
                             env=env)
    process.start()
    try:
        await process.wait_ready(lambda: _healthz(monitor), READY_TIMEOUT_S)
        yield UsersServer(f"nats://127.0.0.1:{port}", passwords)
    finally:
        process.stop()


async def _healthz(monitor: int) -> bool:
    import urllib.request

    def get() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    return await asyncio.to_thread(get)


@pytest.fixture
async def connect(users_server: UsersServer) -> AsyncIterator:
    """Bus.connect as a service user (declares the topology); every bus is closed after the test."""
    buses: list[Bus] = []

    async def connect_as(user: str) -> Bus:
        buses.append(await Bus.connect(users_server.url(user), name=user))
        return buses[-1]

    yield connect_as
    for bus in buses:
        await bus.close()


async def _refused(users_server: UsersServer, user: str, subject: str) -> str:
    """Publish `subject` as `user` with a raw client; the server's asynchronous error, '' when none came."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    client = await nats.connect(users_server.url(user), error_cb=on_error, max_reconnect_attempts=0)
    try:
        await client.publish(subject, b"forged")
        await client.flush()
        await asyncio.sleep(REFUSED_WAIT_S)
    finally:
        await client.close()
    return " ".join(errors)


async def _stored(bus: Bus, subject: str) -> bool:
    return await bus.holds_messages_on(topology.DELETIONS_STREAM.name, subject)


async def test_a_service_confirms_only_its_own_purge(users_server, connect):
    trainer = await connect("trainer")
    own = topology.deletion_confirmed_subject("del-1", "trainer")
    await trainer.publish_raw(own, b"confirmed")
    assert await _stored(trainer, own)
    forgeries = (topology.deletion_confirmed_subject("del-1", "ingest"), topology.deletion_requested_subject("del-2"))
    for forged in forgeries:
        error = await _refused(users_server, "trainer", forged)
        assert f'permissions violation for publish to "{forged}"' in error.lower()
        assert not await _stored(trainer, forged)


async def test_only_the_vault_requests_deletions_and_it_confirms_for_nobody(users_server, connect):
    vault = await connect("privacy")
    requested = topology.deletion_requested_subject("del-3")
    await vault.publish_raw(requested, b"requested")
    assert await _stored(vault, requested)
    forged = topology.deletion_confirmed_subject("del-3", "trainer")
    assert "permissions violation" in (await _refused(users_server, "privacy", forged)).lower()
    assert not await _stored(vault, forged)


async def test_only_the_vault_rewrites_the_deletions_stream(users_server, connect):
    """Deleting, purging or restoring DELETIONS (a restore loads any messages) changes what the vault reads without a
    publish on its subjects: refused to the other services."""
    vault = await connect("privacy")
    requested = topology.deletion_requested_subject("del-4")
    await vault.publish_raw(requested, b"requested")
    stream = topology.DELETIONS_STREAM.name
    for api in ("DELETE", "PURGE", "RESTORE", "MSG.DELETE", "UPDATE"):
        error = await _refused(users_server, "ingest", f"$JS.API.STREAM.{api}.{stream}")
        assert f"permissions violation for publish to \"$js.api.stream.{api}.{stream}\"".lower() in error.lower()
    assert await _stored(vault, requested)
    assert await vault.purge_subject(stream, topology.deletion_subjects("del-4")) == 1


async def test_a_service_declares_the_topology_leaving_the_deletions_stream_to_the_vault(
    users_server, connect, monkeypatch
):
    """Updating DELETIONS could map other subjects onto confirmations, so only the vault may: another service starting
    with another store budget sets its other streams' limits and leaves DELETIONS' as the vault set them."""
    vault = await connect("privacy")
    stream = topology.DELETIONS_STREAM.name
    set_by_vault = (await vault.js.stream_info(stream)).config.max_bytes
    monkeypatch.setenv(NATS_USER_ENV, "trainer")
    monkeypatch.setenv(topology.STORE_BYTES_ENV, str(topology.store_budget() // 2))
    trainer = await asyncio.wait_for(connect("trainer"), 30)
    assert (await trainer.js.stream_info(stream)).config.max_bytes == set_by_vault
    assert (await trainer.js.stream_info(topology.TRAIN_STREAM.name)).config.max_bytes == topology.max_bytes_of(
        topology.TRAIN_STREAM.name, topology.store_budget())


async def test_a_service_acknowledges_only_its_own_purges(users_server, connect):
    """Acknowledging or deleting another service's purge consumer would stop its purge: the deletion never
    certified."""
    vault = await connect("privacy")
    await vault.publish_raw(topology.deletion_requested_subject("del-6"), b"requested")
    trainer = await connect("trainer")
    consumer = topology.purge_consumer("trainer").durable_name
    [request] = await (await trainer.js.pull_subscribe_bind(consumer, topology.DELETIONS_STREAM.name)).fetch(1, 5)
    await request.ack_sync()  # its own
    stream = topology.DELETIONS_STREAM.name
    for forged in (f"$JS.ACK.{stream}.purge-ingest.1.1.1.0.0", f"$JS.API.CONSUMER.DELETE.{stream}.purge-ingest",
                   f"$JS.ACK.{stream}.vault-confirmations.1.1.1.0.0"):
        assert "permissions violation" in (await _refused(users_server, "trainer", forged)).lower(), forged
    info = await vault.js.consumer_info(stream, topology.purge_consumer("ingest").durable_name)
    assert info.num_pending == 1  # ingest's purge of del-6 still waits for ingest


@pytest.mark.parametrize("user", SERVICE_USERS)
async def test_every_service_user_declares_and_uses_the_topology(users_server, connect, user):
    bus = await connect(user)
    record = events_pb2.TrainJob(job_id=f"job-{user}", order_id="order-1")
    await bus.kv_put(topology.ORDERS_BUCKET, f"k-{user}", record)
    assert await bus.kv_get(topology.ORDERS_BUCKET, f"k-{user}", events_pb2.TrainJob) == record
    assert await bus.kv_keys_matching(topology.ORDERS_BUCKET, "*") == [f"k-{user}"]
    await bus.kv_purge(topology.ORDERS_BUCKET, f"k-{user}")
    await bus.publish(topology.TRAIN_SUBJECT, record, msg_id=record.job_id)
    await bus.publish(topology.order_events_subject("order-1"), record)
    [job] = await (await bus.pull(topology.TRAIN_QUEUE)).fetch(1, timeout=5)
    await job.ack_sync()
    if user in topology.PURGING_SERVICES:
        await bus.publish_raw(topology.deletion_confirmed_subject("del-5", user), b"confirmed")
