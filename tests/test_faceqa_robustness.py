"""Files and failures that once cost faceqa a worker or gave a wrong verdict: a progressive JPEG that
repeats its scans, 16-bit grey with transparency, a corrupt EXIF block, a worker killed under
concurrent checks, and a pool sized from the container's CPU limit rather than the node's cores."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.faceqa import reasons as codes
from services.faceqa.checks import check_photo
from services.faceqa.pool import CheckPool, PoolUnavailable, default_workers, own_cpu_max
from tests.fixtures_stack import FACES_DIR


def london(name: str) -> bytes:
    path = FACES_DIR / "london" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"no London photos in {FACES_DIR}")
    return path.read_bytes()


def encoded(image: Image.Image, image_format: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def face(side: int = 700) -> Image.Image:
    with Image.open(io.BytesIO(london("001_neutral"))) as opened:
        return opened.convert("RGB").resize((side, side))


def progressive_scan_bomb(repeats: int) -> bytes:
    """A 7000×5000 progressive JPEG whose last scan comes `repeats` times: every copy decodes the image again."""
    data = encoded(Image.new("L", (7000, 5000), 128), progressive=True, quality=50)
    last_scan = data[data.rindex(b"\xff\xda"):-2]  # up to the end-of-image marker
    return data[:-2] + last_scan * repeats + b"\xff\xd9"


def test_jpeg_repeating_its_scans_is_refused_before_decoding() -> None:
    bomb = progressive_scan_bomb(200)
    started = time.perf_counter()
    result = check_photo(bomb)
    assert result.reasons == (codes.UNREADABLE,)
    assert time.perf_counter() - started < 2


def test_progressive_photo_is_accepted() -> None:
    assert check_photo(encoded(face(), progressive=True, quality=90)).accepted


def test_sixteen_bit_grey_png_with_a_transparent_level_keeps_its_face() -> None:
    samples = np.asarray(face().convert("L")).astype(np.uint16) * 257
    result = check_photo(encoded(Image.fromarray(samples), "PNG", transparency=0))
    assert result.accepted, result.reasons
    assert 0.2 < result.exposure.luminance < 0.78  # grey, not whitened


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "JPEG"])
def test_corrupt_exif_block_leaves_the_photo_readable(image_format: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    block = exif.tobytes().replace(b"MM\x00*", b"MM\x00j", 1)  # the TIFF header's magic number broken
    assert block != exif.tobytes()
    assert check_photo(encoded(face(), image_format, exif=block)).accepted


def test_default_workers_follow_the_cgroup_cpu_quota(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    assert default_workers(cpu_max) == 1
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one worker
    assert default_workers(cpu_max) == 1
    cpu_max.write_text(f"{(cpus + 8) * 100000} 100000\n")  # a quota above the CPUs the process may run on
    assert default_workers(cpu_max) == cpus
    cpu_max.write_text("max 100000\n")
    assert default_workers(cpu_max) == cpus
    assert default_workers(tmp_path / "absent") == cpus


def test_own_cpu_max_is_found_from_the_process_cgroup(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    membership.write_text("0::/kubepods.slice/pod-1/container-2\n")
    assert own_cpu_max(tmp_path, membership) == tmp_path / "kubepods.slice/pod-1/container-2/cpu.max"
    membership.write_text("0::/\n")  # a container with its own cgroup namespace
    assert own_cpu_max(tmp_path, membership) == tmp_path / "cpu.max"


async def test_a_worker_killed_under_concurrent_checks_restarts_the_pool_once() -> None:
    photos = [(london(f"{person:03d}_neutral"), False) for person in (1, 2, 3, 4, 5, 6)]
    others = set(multiprocessing.active_children())
    with CheckPool(workers=2) as pool:
        pool.warm()
        workers = [p for p in multiprocessing.active_children() if p not in others]
        requests = [asyncio.ensure_future(pool.check_all_async(photos)) for _ in range(4)]
        await asyncio.sleep(0.1)  # every request has queued its checks; 24 checks on 2 workers take seconds
        assert not any(request.done() for request in requests)
        os.kill(workers[0].pid, signal.SIGKILL)
        results = await asyncio.gather(*requests, return_exceptions=True)
        assert all(isinstance(result, list) and all(c.accepted for c in result) for result in results), results
        assert pool.restarts == 1


def _stop_this_worker(_: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def test_a_request_whose_worker_dies_twice_is_unavailable_and_the_pool_recovers() -> None:
    with CheckPool(workers=1) as pool:
        with pytest.raises(PoolUnavailable, match="try again"):
            await pool._run_all(_stop_this_worker, [(0,)])  # a worker dying on every try
        assert pool.restarts == 2
        [check] = await pool.check_all_async([(london("001_neutral"), True)])
        assert check.accepted
