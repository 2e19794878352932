"""The `studio` command as a user runs it: models tiny, up (stop, restart, S3 store) and demo."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import psutil
import pytest
from studio.v1 import studio_pb2, trainer_pb2, trainer_pb2_grpc

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack, StackPaths, grpc_healthy
from services.common.basemodel import base_model_id
from services.common.launchers.process import free_port
from services.common.launchers.seaweed import SeaweedS3
from services.common.launchers.triton import shm_regions
from services.common.tinymodel import write_tiny_model
from tests.fixtures_stack import FACES_DIR, faces

STUDIO = [sys.executable, "-m", "services.cli.main"]


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_tiny_model_is_deterministic(tmp_path: Path) -> None:
    # Two separate processes, run side by side, with the same seed; another seed written here.
    runs = {name: subprocess.Popen([*STUDIO, "models", "tiny", "--out", str(tmp_path / name), "--seed", seed, "--json"],
                                   stdout=subprocess.PIPE, text=True)
            for name, seed in (("a", "0"), ("b", "0"))}
    write_tiny_model(tmp_path / "c", seed=1)
    outputs = {"c": {"base_model_id": base_model_id(tmp_path / "c")}}
    for name, run in runs.items():
        stdout, _ = run.communicate(timeout=300)
        assert run.returncode == 0, name
        outputs[name] = json.loads(stdout.strip().splitlines()[-1])
    assert outputs["a"]["base_model_id"] == outputs["b"]["base_model_id"]
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert (tmp_path / "a" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    # base_model_id counts weight files by size (basemodel.py), which the seed does not change; the bytes differ.
    assert outputs["c"]["base_model_id"] == outputs["a"]["base_model_id"]
    assert tree_digest(tmp_path / "c") != tree_digest(tmp_path / "a")


async def _wait_until_up(process: subprocess.Popen, endpoint: str, timeout_s: float = 240) -> None:
    for _ in range(int(timeout_s * 2)):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        if await grpc_healthy(endpoint):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("studio up did not come up")


def _start_up(data_dir: Path, port: int, blob_url: str | None, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
    """`studio up`, given the blob store on its command line, or (None) in its environment."""
    blob_args = ["--blob-url", blob_url] if blob_url else []
    return subprocess.Popen(
        [*STUDIO, "up", "--data", str(data_dir), "--port", str(port), *blob_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )


def _stop(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGTERM a running `studio up` and wait for it; the processes it left behind."""
    if process.poll() is not None:  # it must still be running: say how it ended instead of a psutil error
        output = process.stdout.read() if process.stdout else ""
        raise AssertionError(f"studio up exited by itself with {process.returncode}:\n{output[-4000:]}")
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=90)
    gone, alive = psutil.wait_procs(children, timeout=5)
    return alive


@pytest.mark.asyncio(loop_scope="session")
async def test_up_stops_cleanly_and_restarts_with_its_state(tmp_path: Path, seaweed_s3: SeaweedS3) -> None:
    data_dir, port = tmp_path / "data", free_port()
    endpoint = f"127.0.0.1:{port}"
    blob_url = f"{seaweed_s3.url}/studio-cli-test"
    # Written here, where diffusers is loaded already; a stack generating its own is the session stack's start.
    write_tiny_model(data_dir / "models" / "tiny")
    first = _start_up(data_dir, port, blob_url)
    try:
        subject_id = await _use_first_stack(first, endpoint, StackPaths(data_dir), seaweed_s3)
        await asyncio.to_thread(_a_second_up_is_refused, data_dir, port, tmp_path)
        assert await grpc_healthy(endpoint)
    finally:
        assert _stop(first) == [], "processes left behind after SIGTERM"
    assert first.returncode == 0
    assert not (data_dir / "stack.json").exists()
    nats_token = StackPaths(data_dir).nats_token_file.read_text()

    # The restart is told of two GPUs: it starts the trainer fleet, one worker per GPU. It takes the blob store's
    # URL, secret and all, from its environment: out of the process list.
    second = _start_up(data_dir, port, None, env={"STUDIO_TRAINER_GPUS": "0,1", "STUDIO_BLOB_URL": blob_url})
    try:
        await _wait_until_up(second, endpoint)
        assert StackPaths(data_dir).nats_token_file.read_text() == nats_token  # the stored state is the same NATS's
        client = StudioClient(endpoint, StackPaths(data_dir).api_key_file.read_text().strip())
        found = (await client.stub.GetSubject(
            studio_pb2.GetSubjectRequest(subject_id=subject_id), metadata=client.metadata
        )).subject
        await client.close()
        assert found.external_ref == "kept" and len(found.photos) == 1
        assert await _trainer_devices(data_dir) == ["cuda (GPU 0)", "cuda (GPU 1)"]
        await _a_killed_service_comes_back_on_its_address(data_dir, endpoint, seaweed_s3)
        await _tritons_shared_memory_is_kept_private(data_dir)
    finally:
        assert _stop(second) == []


def _a_second_up_is_refused(data_dir: Path, port: int, tmp_path: Path) -> None:
    """On the running stack's data directory, or on its port, `studio up` starts nothing and says why."""
    stack_file = (data_dir / "stack.json").read_text()
    other_dir = tmp_path / "other-data"
    for args, reason in (
        (["--data", str(data_dir), "--port", str(free_port())], f"{data_dir} is in use by another stack (pid "),
        (["--data", str(other_dir), "--port", str(port)], f"port {port} is already in use"),
    ):
        run = subprocess.run([*STUDIO, "up", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and run.stderr.startswith(f"error: {reason}"), run.stderr[-2000:]
        assert "starting" not in run.stdout and "stopped" not in run.stdout
    assert (data_dir / "stack.json").read_text() == stack_file
    assert not (other_dir / "nats").exists() and not (other_dir / "secrets").exists()


async def _a_killed_service_comes_back_on_its_address(data_dir: Path, endpoint: str, seaweed_s3: SeaweedS3) -> None:
    """faceqa, which ingest and the trainer dial, is killed: `studio up` starts it again on the same address,
    and uploads are checked again (and stored in the S3 bucket the stack was given)."""
    stack_file = data_dir / "stack.json"
    before = json.loads(stack_file.read_text())
    os.kill(before["pids"]["faceqa"], signal.SIGKILL)
    for _ in range(240):
        await asyncio.sleep(0.5)
        after = json.loads(stack_file.read_text())
        if after["pids"]["faceqa"] != before["pids"]["faceqa"]:
            break
    else:
        raise AssertionError("faceqa was not started again")
    assert after["services"]["faceqa"] == before["services"]["faceqa"]
    client = StudioClient(endpoint, StackPaths(data_dir).api_key_file.read_text().strip())
    try:
        subject = await client.create_subject()
        [photo] = await client.upload(subject.subject_id, [(faces("lisa")[1], 2)])
        assert photo.verdict.accepted, photo.verdict
    finally:
        await client.close()
    stored = [o.object_name for o in seaweed_s3.client().list_objects("studio-cli-test", recursive=True)]
    assert any(f"/{subject.subject_id}/photos/" in name for name in stored), stored


async def _tritons_shared_memory_is_kept_private(data_dir: Path) -> None:
    """A region readable by all, as a Triton that reloads a model whose python stub died creates one, is made private
    again within a moment (the server's ShmGuard)."""
    port = int(json.loads((data_dir / "stack.json").read_text())["triton_grpc"].rsplit(":", 1)[1])
    regions = shm_regions(port)
    assert regions and all(stat.S_IMODE(region.stat().st_mode) == 0o600 for region in regions)
    regions[0].chmod(0o644)
    for _ in range(100):
        if stat.S_IMODE(regions[0].stat().st_mode) == 0o600:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("studio up left Triton's shared memory readable by all")


async def _trainer_devices(data_dir: Path) -> list[str]:
    devices, stack_file = [], data_dir / "stack.json"
    for _ in range(60):  # `studio up` writes it just after ingest (the endpoint waited for) turns healthy
        if stack_file.exists():
            break
        await asyncio.sleep(0.5)
    for address in json.loads(stack_file.read_text())["instances"]["trainer"]:
        async with grpc.aio.insecure_channel(address) as channel:
            status = await trainer_pb2_grpc.TrainerStub(channel).GetTrainerStatus(
                trainer_pb2.GetTrainerStatusRequest(), timeout=10
            )
        devices.append(status.status.device)
    return devices


async def _use_first_stack(process: subprocess.Popen, endpoint: str, paths: StackPaths, seaweed_s3: SeaweedS3) -> str:
    await _wait_until_up(process, endpoint)
    for secret in (paths.api_key_file, paths.tokens_file, paths.secrets / "master-key.json", paths.nats_token_file):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    client = StudioClient(endpoint, paths.api_key_file.read_text().strip())
    subject = await client.create_subject(external_ref="kept")
    [photo] = await client.upload(subject.subject_id, [(faces("lisa")[0], 2)])
    assert photo.verdict.accepted
    await client.close()
    objects = [o.object_name for o in seaweed_s3.client().list_objects("studio-cli-test", recursive=True)]
    assert any("/photos/" in name for name in objects) and any("/crops/" in name for name in objects)
    for name in objects:
        data = seaweed_s3.client().get_object("studio-cli-test", name).read()
        assert data.startswith(b"PSE1") and b"JFIF" not in data and b"IHDR" not in data
    return subject.subject_id


def test_demo_against_a_running_stack(stack: EmbeddedStack, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in faces("lisa")[:3]:
        (photos / photo.name).symlink_to(photo)
    run = subprocess.run(
        [*STUDIO, "demo", "--photos", str(photos), "--endpoint", stack.public_endpoint,
         "--api-key-file", str(stack.paths.api_key_file), "--out", str(tmp_path / "out"), "--json", "--express"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "STUDIO_FACES_DIR": str(FACES_DIR)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["state"] == "ORDER_STATE_DONE"
    assert [p["accepted"] for p in result["photos"]] == [True, True, True]
    # The set as the stack judged it (its minimum is 1; the demo's own note says what production needs).
    assert result["photo_set"] == {"sufficient": True, "accepted": 3, "minimum": 1, "recommended": 20,
                                   "headshot_accepted": True, "problems": result["photo_set"]["problems"]}
    assert len(result["portraits"]) == 2 and all(Path(p).stat().st_size > 0 for p in result["portraits"])
    assert all(Path(p).stat().st_mode & 0o777 == 0o600 for p in result["portraits"])  # the face in clear: owner-only
    assert {"upload_and_check", "training", "rendering", "download"} <= set(result["seconds"])
    training = result["training"]
    assert training["final_loss"] > 0 and training["best_step"] >= 1
    assert all(point["step"] >= 1 for point in training["validation"])
    # Position and ETA while queued: on stderr beside --json, and in the result.
    assert "queued: position " in run.stderr and " ETA " in run.stderr
    assert result["queued"][0]["stage"] == "training" and result["queued"][0]["eta_seconds"] > 0


def test_a_relative_data_dir_reaches_the_services_as_an_absolute_path(tmp_path: Path, monkeypatch) -> None:
    # Services run with the repository as their working directory, so `studio up --data data` run from
    # anywhere else must hand them absolute paths (the vault's token file above all).
    monkeypatch.chdir(tmp_path)
    stack = EmbeddedStack(data_dir=Path("relative-data"))
    assert stack.data_dir == tmp_path / "relative-data"
    assert stack.paths.tokens_file.is_absolute()


@pytest.mark.parametrize("case", ["missing folder", "empty folder", "missing headshot", "out is a file"])
def test_demo_refuses_a_wrong_path_before_starting_any_stack(tmp_path: Path, case: str) -> None:
    photos = tmp_path / "photos"
    if case != "missing folder":
        photos.mkdir()
    if case in ("missing headshot", "out is a file"):
        (photos / faces("lisa")[0].name).symlink_to(faces("lisa")[0])
    if case == "out is a file":
        (tmp_path / "out").write_text("not a folder")
    headshot = ["--headshot", str(tmp_path / "absent.jpg")] if case == "missing headshot" else []
    # Nothing answers on this port, so the demo would start an embedded stack if it checked the photos late.
    run = subprocess.run(
        [*STUDIO, "demo", "--photos", str(photos), *headshot, "--endpoint", f"127.0.0.1:{free_port()}",
         "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    expected = {
        "missing folder": f"no such folder: {photos}",
        "empty folder": f"no photos (.jpg/.jpeg/.png/.webp/.heic/.heif) in {photos}",
        "missing headshot": f"no such headshot file: {tmp_path / 'absent.jpg'}",
        "out is a file": f"--out {tmp_path / 'out'} is a file, not a folder",
    }[case]
    assert run.returncode != 0 and expected in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "starting" not in run.stdout
    assert not (tmp_path / "data").exists() and (case == "out is a file") == (tmp_path / "out").exists()


def test_demo_against_a_remote_endpoint_that_does_not_answer_starts_nothing(tmp_path: Path) -> None:
    """An embedded stack starts only for a local endpoint: one started here would not be the stack asked for."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / faces("lisa")[0].name).symlink_to(faces("lisa")[0])
    run = subprocess.run(
        [*STUDIO, "demo", "--photos", str(photos), "--endpoint", "no-such-host.invalid:50051",
         "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1 and "no stack answers at no-such-host.invalid:50051" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "starting" not in run.stdout
    assert not (tmp_path / "data").exists()
