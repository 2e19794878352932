"""The embedded stack (nats-server, tritonserver, the five services as processes) for tests,
started once per session on free ports in a temporary data dir."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common.launchers.process import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
FACES_DIR = Path(os.environ.get("STUDIO_FACES_DIR", REPO_ROOT.parent / "shared" / "faces"))


def faces(folder: str) -> list[Path]:
    photos = sorted((FACES_DIR / folder).glob("*.jpg"))
    if not photos:
        pytest.skip(f"no test photos in {FACES_DIR / folder} (set STUDIO_FACES_DIR)")
    return photos


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedStack]:
    # Tests order with one or a few photos: below the production minimum of accepted photos. Two render workers,
    # as production runs several (deploy/k8s/base/config.yaml): two customers' jobs render at once.
    embedded = EmbeddedStack(data_dir=tmp_path_factory.mktemp("stack"), public_port=free_port(), min_accepted_photos=1,
                             extra_env={"STUDIO_RENDER_WORKERS": "2"})
    await embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: EmbeddedStack) -> AsyncIterator[StudioClient]:
    studio = StudioClient(stack.public_endpoint, stack.paths.api_key_file.read_text().strip())
    try:
        yield studio
    finally:
        await studio.close()
