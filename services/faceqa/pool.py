"""Photo checks on every core: a process pool whose workers load the dlib models once.

Threads do not help: dlib's HOG detector releases the GIL but the ResNet encoder (half of the
time per photo) holds it (measured: 20 embeddings take 1.66 s on one thread, 1.72 s on two).
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from services.faceqa.checks import FaceEmbedding, PhotoCheck, check_photo, main_face_embedding
from services.faceqa.models import face_models
from services.faceqa.thresholds import DEFAULTS, Thresholds

_PR_SET_PDEATHSIG = 1
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_worker_thresholds: Thresholds = DEFAULTS


class PoolUnavailable(RuntimeError):
    """A worker died under this request twice (killed, out of memory): worth retrying later."""


def _start_worker(thresholds: Thresholds) -> None:
    global _worker_thresholds
    _worker_thresholds = thresholds
    if sys.platform == "linux":  # a worker outliving a SIGKILLed parent would idle forever
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    face_models()


def _check(data: bytes, headshot: bool, crop_size: int) -> PhotoCheck:
    return check_photo(data, crop_size=crop_size, headshot=headshot, thresholds=_worker_thresholds)


def _embed(data: bytes) -> FaceEmbedding | None:
    return main_face_embedding(data, _worker_thresholds)


def _ready(_: int) -> int:
    return os.getpid()


def default_workers(cpu_max: Path | None = None) -> int:
    """One worker per CPU this process may use: the CPUs it may run on, capped by its cgroup's CPU
    quota (a container limited to 4 CPUs on a 64-core node gets 4, not 64). A fraction of a CPU left
    over is no worker's worth: it would be throttled and hold a worker's memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cpu_quota(cpu_max or own_cpu_max())
    return max(1, min(cpus, int(quota))) if quota is not None else max(1, cpus)


def cpu_quota(cpu_max: Path) -> float | None:
    """CPUs allowed by a cgroup v2 cpu.max file ("<quota> <period>", quota "max" when unlimited);
    None when unlimited or unreadable."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def own_cpu_max(root: Path = _CGROUP_ROOT, membership: Path = Path("/proc/self/cgroup")) -> Path:
    """This process's cgroup v2 cpu.max (in a container with its own cgroup namespace: root's)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    return root / own.lstrip("/") / "cpu.max"


def _start_method() -> str:
    # fork is near-free (the parent's loaded models are shared), but forking a process that runs
    # other threads (gRPC, asyncio executors) can deadlock the child: spawn then.
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


class CheckPool:
    """check_photo over a process pool; one worker per usable CPU (default_workers) unless told otherwise."""

    def __init__(self, workers: int | None = None, thresholds: Thresholds = DEFAULTS) -> None:
        self.workers = workers or default_workers()
        self.thresholds = thresholds
        self.restarts = 0  # pools started again after a worker died
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context(_start_method()),
            initializer=_start_worker, initargs=(self.thresholds,),
        )

    def warm(self) -> None:
        """Start every worker and load its models now rather than on the first photos."""
        list(self._executor.map(_ready, range(self.workers * 2)))

    def check_all(
        self, photos: Sequence[tuple[bytes, bool]], crop_size: int = 64, on_done: Callable[[], None] = lambda: None
    ) -> list[PhotoCheck]:
        """photos: (bytes, is_headshot); results in the same order; on_done after each photo."""
        futures = [self._executor.submit(_check, data, headshot, crop_size) for data, headshot in photos]
        for future in futures:
            future.add_done_callback(lambda _: on_done())
        return [future.result() for future in futures]

    async def check_all_async(self, photos: Sequence[tuple[bytes, bool]], crop_size: int = 64) -> list[PhotoCheck]:
        return await self._run_all(_check, [(data, headshot, crop_size) for data, headshot in photos])

    async def embed_all_async(self, images: Sequence[bytes]) -> list[FaceEmbedding | None]:
        return await self._run_all(_embed, [(data,) for data in images])

    async def _run_all(self, function, argument_lists: list[tuple]) -> list:
        """A worker that dies (killed, out of memory) breaks the whole pool: a fresh one is started and
        the request tried once more; a second death answers PoolUnavailable."""
        try:
            return await self._run_once(function, argument_lists)
        except BrokenProcessPool:
            pass
        try:
            return await self._run_once(function, argument_lists)
        except BrokenProcessPool as error:
            message = "a photo check worker stopped twice during this request; try again shortly"
            raise PoolUnavailable(message) from error

    async def _run_once(self, function, argument_lists: list[tuple]) -> list:
        executor = self._executor
        try:
            return await self._gather(executor, function, argument_lists)
        except BrokenProcessPool:
            self._replace(executor)
            raise

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Every request that ran on the broken pool gets here; only the first replaces it (shutting down a
        # pool that another request already replaced would cancel the requests running on the new one).
        # Nothing here awaits, so on the event loop no other request can run between the test and the swap.
        if self._executor is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            self.restarts += 1

    @staticmethod
    async def _gather(executor: ProcessPoolExecutor, function, argument_lists: list[tuple]) -> list:
        loop = asyncio.get_running_loop()
        runs = [loop.run_in_executor(executor, function, *arguments) for arguments in argument_lists]
        return list(await asyncio.gather(*runs))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> CheckPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
