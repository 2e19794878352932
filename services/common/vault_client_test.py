"""The data-key cache against a real vault over a socket."""

from __future__ import annotations

import asyncio

import pytest
from studio.v1 import privacy_pb2

from services.common.vault_client import VaultClient
from services.privacy.server_test import TOKENS, Running, register, vault  # noqa: F401  (fixture)

pytestmark = pytest.mark.asyncio(loop_scope="session")
UPLOAD = privacy_pb2.KEY_PURPOSE_ENCRYPT_UPLOAD


def client_of(vault: Running) -> VaultClient:  # noqa: F811
    client = VaultClient("127.0.0.1:1", TOKENS["ingest"])
    client._stub = vault.stub  # the fixture's channel to the vault's real port
    return client


async def test_an_expired_key_leaves_memory_at_the_next_fetch_of_any_key(vault: Running) -> None:  # noqa: F811
    for subject in ("subject-1", "subject-2"):
        await register(vault.stub, subject=subject)
    client = client_of(vault)
    client.key_ttl_s = 0.2
    await client.data_key("tenant-a", "subject-1", UPLOAD)
    assert client.holds_key_of("subject-1")
    await asyncio.sleep(0.3)
    await client.data_key("tenant-a", "subject-2", UPLOAD)
    assert not client.holds_key_of("subject-1")
    assert client.holds_key_of("subject-2")
    await client.close()


async def test_a_key_is_used_again_within_its_lifetime(vault: Running) -> None:  # noqa: F811
    await register(vault.stub)
    client = client_of(vault)
    first = await client.data_key("tenant-a", "subject-1", UPLOAD)
    assert await client.data_key("tenant-a", "subject-1", UPLOAD) is first
    await client.close()
