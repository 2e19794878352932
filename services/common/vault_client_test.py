"""The data-key cache against a real vault over a socket."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from studio.v1 import privacy_pb2

from services.common import workqueue
from services.common.grpc_server_test import intercepted_server
from services.common.vault_client import VaultClient, VaultStorageFull
from services.privacy.server_test import TOKENS, Running, data_key, register, vault  # noqa: F401  (fixture)

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


async def test_a_vault_out_of_storage_holds_a_workers_job_until_it_has_room(vault: Running) -> None:  # noqa: F811
    """Not the job's fault: the job waits and runs again (workqueue._through_outages) instead of failing its order."""
    await register(vault.stub)
    client = client_of(vault)
    store = vault.servicer.vault
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the vault's volume is full: SQLITE_FULL
    await fill(vault)
    refusals: list[Exception] = []

    async def job(payload: bytes) -> None:
        try:
            await client.data_key("tenant-a", "subject-1", UPLOAD)
        except VaultStorageFull as refused:
            refusals.append(refused)
            store._db.execute(f"PRAGMA max_page_count = {2**30}")  # the operator grew the volume
            raise

    await asyncio.wait_for(workqueue._through_outages(job, b""), 30)
    assert refusals and workqueue.is_outage(refusals[0])
    assert "storage is full" in str(refusals[0])
    await client.close()


async def fill(vault: Running) -> None:  # noqa: F811
    """Ask for keys until the store has no room left for their audit entries."""
    for _ in range(500):
        try:
            await data_key(vault.stub)
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
            return
    pytest.fail("the store never filled")


async def test_a_service_calling_a_vault_out_of_storage_answers_resource_exhausted(vault: Running) -> None:  # noqa: F811
    await register(vault.stub)
    client = client_of(vault)
    store = vault.servicer.vault
    store._db.execute(f"PRAGMA max_page_count = {store._db.execute('PRAGMA page_count').fetchone()[0]}")
    await fill(vault)

    async def seal(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return (await client.data_key("tenant-a", "subject-1", UPLOAD)).key_id.encode()

    sealing = grpc.method_handlers_generic_handler("test.Seal", {"Seal": grpc.unary_unary_rpc_method_handler(seal)})
    server, address = await intercepted_server("vault-full-test", sealing)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary("/test.Seal/Seal")(b"", timeout=10)
    finally:
        await server.stop(grace=None)
        await client.close()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "storage is full" in refused.value.details()
