"""examples/integration.py against the real stack: a chain's script works as written, and running it
again resumes instead of creating anything twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.client import StudioClient
from services.cli.stack import REPO_ROOT, EmbeddedStack
from tests.fixtures_tenants import lisa_headshot

pytestmark = pytest.mark.asyncio(loop_scope="session")


def integration(stack: EmbeddedStack, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([
        sys.executable, str(REPO_ROOT / "examples" / "integration.py"), "--endpoint", stack.public_endpoint,
        "--api-key-file", str(stack.paths.api_key_file), "--photos", str(lisa_headshot().parent),
        "--headshot", str(lisa_headshot()), "--customer", "example-customer", "--out", str(out),
    ], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


async def test_the_integration_example_runs_and_resumes(stack: EmbeddedStack, client: StudioClient, tmp_path):
    first = await asyncio.to_thread(integration, stack, tmp_path / "first")
    assert first.returncode == 0, first.stdout + first.stderr
    portraits = list((tmp_path / "first").glob("*.png"))
    assert portraits and all(path.read_bytes().startswith(b"\x89PNG") for path in portraits)
    again = await asyncio.to_thread(integration, stack, tmp_path / "again")
    assert again.returncode == 0, again.stderr
    photos = len(list(lisa_headshot().parent.glob("*.jpg")))
    assert f"uploaded {photos} photos ({photos} already there)" in again.stdout
    subject_line = next(line for line in first.stdout.splitlines() if line.startswith("subject "))
    assert subject_line in again.stdout.splitlines()
    assert len((await client.list_subjects(external_ref="example-customer")).subjects) == 1
