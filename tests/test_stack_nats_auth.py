"""The embedded stack's nats-server admits only the stack's own processes: other local users of the machine could
otherwise read the order and tenant buckets and publish events (purge confirmations drive deletion certificates)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from services.cli.stack import EmbeddedStack, grpc_healthy
from services.common.bus import Bus
from services.common.launchers.nats import server_config_file

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_stacks_nats_refuses_a_client_without_its_token(stack: EmbeddedStack) -> None:
    assert stack.nats and stack.nats.token
    token_file, token = stack.paths.nats_token_file, stack.nats.token
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(stack.nats.address, connect_timeout=5, allow_reconnect=False)
    bus = await Bus.connect(stack.nats.url, name="token-holder")  # the token, as every service of the stack has it
    await bus.close()
    assert all([await grpc_healthy(address) for address in stack.addresses.values()])  # each connected with it
    # What other local users can read holds no token: nats-server's command line, the services' ones, stack.json.
    for pid in [stack.nats.process.pid, *(process.pid for process in stack.processes.values())]:
        assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
    assert json.loads((stack.data_dir / "stack.json").read_text())["nats_url"] == stack.nats.address
    assert token not in (stack.data_dir / "stack.json").read_text() and token not in repr(stack)
    for secret in (token_file, server_config_file(token_file)):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # Nor do the logs of the stack's processes.
    assert not [log.name for log in stack.paths.logs.iterdir() if token in log.read_text(errors="replace")]
