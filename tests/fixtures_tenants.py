"""Tenants for API tests, made through the operator's TenantAdmin API on the session stack."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from studio.v1 import common_pb2

from services.cli.stack import EmbeddedStack
from studio_client import AdminClient, StudioClient
from tests.fixtures_stack import faces

HEADSHOT, REFERENCE = common_pb2.PHOTO_ROLE_HEADSHOT, common_pb2.PHOTO_ROLE_REFERENCE
STYLE = ["studio-frontal-soft"]


def lisa_headshot() -> Path:
    return next(path for path in faces("lisa") if path.name == "lisa_lisa1.jpg")


def lisa_references() -> list[Path]:
    return [path for path in faces("lisa") if path.name != "lisa_lisa1.jpg"]


def operator_token(stack: EmbeddedStack) -> str:
    return stack.paths.token_file("operator").read_text().strip()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(stack: EmbeddedStack) -> AsyncIterator[AdminClient]:
    client = AdminClient(stack.public_endpoint, operator_token(stack))
    try:
        yield client
    finally:
        await client.close()


class Tenants:
    """Creates tenants (min_accepted_photos 1 unless given) and closes their clients at the end."""

    def __init__(self, stack: EmbeddedStack, admin: AdminClient) -> None:
        self.stack, self.admin = stack, admin
        self.clients: list[StudioClient] = []

    async def new(self, endpoint: str | None = None, **settings) -> tuple[str, StudioClient]:
        settings.setdefault("min_accepted_photos", 1)
        created = await self.admin.create(f"test-{secrets.token_hex(4)}", **settings)
        return created.tenant.tenant_id, self.client(created.api_key, endpoint)

    def client(self, api_key: str, endpoint: str | None = None, **options) -> StudioClient:
        client = StudioClient(endpoint or self.stack.public_endpoint, api_key, **options)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def tenants(stack: EmbeddedStack, admin: AdminClient) -> AsyncIterator[Tenants]:
    made = Tenants(stack, admin)
    try:
        yield made
    finally:
        await made.close()
