import os
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from services.common.launchers.nats import NatsServer, start_nats
from services.common.launchers.process import tcp_port_open


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _publish_and_fetch(url: str, stream: str) -> bytes:
    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"]))
        ack = await js.publish(f"{stream}.hello", b"payload", headers={"Nats-Msg-Id": "m1"})
        assert ack.stream == stream
        subscription = await js.pull_subscribe(f"{stream}.>", durable="worker")
        [message] = await subscription.fetch(1, timeout=5)
        await message.ack()
        return message.data
    finally:
        await client.close()


async def test_start_publish_fetch_stop(tmp_path: Path) -> None:
    server = await start_nats(tmp_path / "data", tmp_path / "logs")
    port = int(server.url.rsplit(":", 1)[1])
    pid = server.process.pid
    assert pid is not None
    try:
        assert await _publish_and_fetch(server.url, "TEST") == b"payload"
        assert any((tmp_path / "data").rglob("*")), "JetStream should persist into data_dir"
    finally:
        server.stop()
    assert not server.process.is_running()
    assert not await tcp_port_open("127.0.0.1", port)
    assert not _process_exists(pid)
    server.stop()  # idempotent


async def test_explicit_port(tmp_path: Path) -> None:
    from services.common.launchers.process import free_port

    port = free_port()
    server = await start_nats(tmp_path / "data", tmp_path / "logs", port=port)
    try:
        assert server.url == f"nats://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_session_fixture_serves_jetstream(nats_server: NatsServer) -> None:
    assert await _publish_and_fetch(nats_server.url, "FIXTURE") == b"payload"
