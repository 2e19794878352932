import os
import stat
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError
from nats.js.api import StreamConfig

from services.common.launchers.nats import NatsServer, server_config_file, start_nats
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


async def test_a_token_file_admits_only_clients_presenting_its_token(tmp_path: Path) -> None:
    token_file = tmp_path / "secrets" / "nats.token"
    server = await start_nats(tmp_path / "data", tmp_path / "logs", token_file=token_file)
    try:
        token = token_file.read_text().strip()
        assert server.token == token and server.url == server.address.replace("nats://", f"nats://{token}@")
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(server.address, connect_timeout=5, allow_reconnect=False)
        with pytest.raises(NatsError, match="Authorization Violation"):
            await nats.connect(server.address.replace("nats://", "nats://not-the-token@"), connect_timeout=5,
                               allow_reconnect=False)
        assert await _publish_and_fetch(server.url, "AUTHED") == b"payload"
        # Other local users read /proc/PID/cmdline; the token (0600) and the configuration holding it are ours alone.
        assert token.encode() not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        for secret in (token_file, server_config_file(token_file)):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert token not in repr(server) and token not in server.process.log_tail(200)
    finally:
        server.stop()


async def test_a_restarted_server_keeps_the_token_its_file_holds(tmp_path: Path) -> None:
    token_file = tmp_path / "secrets" / "nats.token"
    first = await start_nats(tmp_path / "data", tmp_path / "logs", token_file=token_file)
    first.stop()
    second = await start_nats(tmp_path / "data", tmp_path / "logs", token_file=token_file)
    try:
        assert second.token == first.token
        assert await _publish_and_fetch(second.url, "AGAIN") == b"payload"
    finally:
        second.stop()
