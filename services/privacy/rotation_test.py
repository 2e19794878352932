"""KEK rotation under live traffic: every data key rewrapped inside the vault while services keep
fetching keys; the old master key version is retired; the data keys themselves never change."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3

import grpc
from studio.v1 import privacy_pb2

from services.privacy.server_test import (
    Running,
    data_key,
    expect_status,
    register,
    token,
    vault,  # noqa: F401  (fixture)
)

SUBJECTS = 450  # more than two rewrap batches, so key reads interleave with the rotation


async def rotate(stub, service: str = "operator") -> privacy_pb2.RotateKekResponse:
    return await stub.RotateKek(privacy_pb2.RotateKekRequest(), metadata=token(service), timeout=120)


def kek_versions(running: Running) -> list[str]:
    return sorted(json.loads(running.kek_file.read_text())["keys"])


async def test_rotation_under_live_traffic(vault: Running) -> None:  # noqa: F811
    subjects = [f"subject-{index}" for index in range(SUBJECTS)]
    for subject in subjects:
        await register(vault.stub, subject=subject)
    before = {subject: (await data_key(vault.stub, subject=subject)).data_key for subject in subjects}
    old_key = json.loads(vault.kek_file.read_text())["keys"]["1"]
    stop = asyncio.Event()
    served: list[int] = []

    async def traffic(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            subject = rng.choice(subjects)
            reply = await data_key(vault.stub, subject=subject, service="faceqa",
                                   purpose=privacy_pb2.KEY_PURPOSE_DECRYPT_PHOTO)
            assert reply.data_key == before[subject]
            served.append(1)

    readers = [asyncio.create_task(traffic(seed)) for seed in range(4)]
    await asyncio.sleep(0.2)
    during = len(served)
    rotation = await rotate(vault.stub)
    stop.set()
    await asyncio.gather(*readers)  # any failed read raises here
    assert len(served) > during, "key reads went on while the rotation ran"
    assert rotation.new_version == 2 and rotation.keys_rewrapped == SUBJECTS
    assert list(rotation.retired_versions) == [1]
    assert kek_versions(vault) == ["2"] and old_key not in vault.kek_file.read_text()
    with sqlite3.connect(vault.data_dir / "privacy" / "vault.sqlite3") as db:
        assert db.execute("SELECT DISTINCT kek_version FROM subjects").fetchall() == [(2,)]
    for subject in subjects[:20]:
        assert (await data_key(vault.stub, subject=subject)).data_key == before[subject]
    again = await rotate(vault.stub)
    assert (again.new_version, list(again.retired_versions)) == (3, [2]) and kek_versions(vault) == ["3"]


async def test_only_the_operator_rotates_and_rotation_is_audited(vault: Running) -> None:  # noqa: F811
    await register(vault.stub)
    await expect_status(rotate(vault.stub, service="ingest"), grpc.StatusCode.PERMISSION_DENIED)
    await expect_status(
        vault.stub.RotateKek(privacy_pb2.RotateKekRequest(), timeout=10), grpc.StatusCode.UNAUTHENTICATED
    )
    await rotate(vault.stub)
    records = [r async for r in await vault.servicer.vault.export_audit()]
    rotations = [r for r in records if r.get("action") == "RotateKek"]
    assert [(r["service"], r["outcome"]) for r in rotations] == [
        ("ingest", "DENIED_POLICY"), ("-", "DENIED_UNAUTHENTICATED"), ("operator", "ALLOWED"),
        ("operator", "ALLOWED"),
    ]
    assert json.loads(rotations[2]["detail"]) == {"new_version": 2, "rewrapped": 1, "retired": [1]}


async def test_one_rotation_at_a_time(vault: Running) -> None:  # noqa: F811
    for subject in range(300):  # enough rewrapping that the second request arrives while the first runs
        await register(vault.stub, subject=f"subject-{subject}")
    first, second = await asyncio.gather(rotate(vault.stub), rotate(vault.stub), return_exceptions=True)
    [done] = [outcome for outcome in (first, second) if isinstance(outcome, privacy_pb2.RotateKekResponse)]
    [refused] = [outcome for outcome in (first, second) if isinstance(outcome, grpc.aio.AioRpcError)]
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION and "under way" in refused.details()
    assert (done.new_version, done.keys_rewrapped, list(done.retired_versions)) == (2, 300, [1])
    assert kek_versions(vault) == ["2"]
    records = [r async for r in await vault.servicer.vault.export_audit()]
    outcomes = sorted(r["outcome"] for r in records if r.get("action") == "RotateKek")
    assert outcomes == ["ALLOWED", "ALLOWED", "DENIED_CONFLICT"]  # the rotation's two entries, the refusal
