"""Start the tritonserver binary shipped in the nvidia-pytriton wheel with our own model repository.

We do not use PyTriton's API: we run its tritonserver with the python backend and a backend
directory assembled here, as described in DESIGN.md (Models → Triton).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.launchers.process import ManagedProcess, free_ports, with_shared_cores

READY_TIMEOUT = 300.0
EXIT_TIMEOUT_SECS = 10
SHM_GROWTH_BYTES = 32 * 1024 * 1024
# Triton's Prometheus counter of a model's requests answered.
SERVED_COUNTER = "nv_inference_request_success"
REPO_ROOT = Path(__file__).resolve().parents[3]
SHM_DIR = Path("/dev/shm")
# How often a running server's shared-memory regions are made private again (ShmGuard).
SHM_GUARD_INTERVAL_S = 0.5


@dataclass
class TritonServer:
    grpc_url: str
    http_port: int
    metrics_port: int
    process: ManagedProcess
    guard: ShmGuard | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.grpc_url.rsplit(":", 1)[0]

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_url.rsplit(":", 1)[1])

    def stop(self, timeout: float = EXIT_TIMEOUT_SECS + 5) -> None:
        if self.guard:
            self.guard.stop()
        self.process.stop(timeout)
        remove_shm_regions(self.grpc_port)

    @property
    def ports(self) -> set[int]:
        return {self.grpc_port, self.http_port, self.metrics_port}

    async def wait_ready(self, models: Sequence[str] = ("portrait_diffusion",), timeout: float = READY_TIMEOUT) -> None:
        """Until `ready(models)`; a server that exits or misses `timeout` is stopped (ProcessStartError)."""
        try:
            await self.process.wait_ready(lambda: self.ready(models), timeout)
        except BaseException:
            self.stop()
            raise

    async def ready(self, models: Sequence[str] = ("portrait_diffusion",)) -> bool:
        """Server and models ready. A model's stub creates its shared-memory region while the model loads, before
        any request can reach it, so a ready server's regions are made private here (after a restart too: the
        supervisor waits on this)."""
        if not await _all_ready(self.http_url, self.metrics_url, models):
            return False
        self.protect_shm_regions()
        return True

    def protect_shm_regions(self) -> None:
        protect_shm_regions(self.grpc_port)

    def counter(self, name: str, model: str) -> float:
        """Sum of a Prometheus counter over `model`'s series, read from Triton's metrics port."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith(name + "{") and f'model="{model}"' in line)

    def served_reaching(self, model: str, total: float, timeout_s: float = 30) -> float:
        """`model`'s requests served (nv_inference_request_success) once it reaches `total`, or at `timeout_s`. The
        python backend reports a batch's statistics after its responses leave, so a reading taken as the last
        response arrives can miss the batch; wait on this before reading executions or statistics."""
        deadline = time.monotonic() + timeout_s
        while (served := self.counter(SERVED_COUNTER, model)) < total and time.monotonic() < deadline:
            time.sleep(0.1)
        return served

    def executions(self, model: str) -> dict[str, float]:
        """`model`'s executions since Triton started, read from the statistics extension (execution_totals)."""
        with urllib.request.urlopen(f"{self.http_url}/v2/models/{model}/stats", timeout=5) as response:
            return execution_totals(json.load(response)["model_stats"][0])


_EXECUTION_PARTS = ("compute_input", "compute_infer", "compute_output")


def execution_totals(statistics: dict) -> dict[str, float]:
    """From Triton's statistics of a model, its executions so far: how many, how many requests they held, the
    seconds spent in the model (inputs in, execute, outputs out) and in execute alone."""
    batches = statistics.get("batch_stats", [])
    return {
        "executions": sum(int(batch["compute_infer"]["count"]) for batch in batches),
        "requests": sum(int(batch["batch_size"]) * int(batch["compute_infer"]["count"]) for batch in batches),
        "model_s": sum(int(batch[part]["ns"]) for batch in batches for part in _EXECUTION_PARTS) / 1e9,
        "execute_s": sum(int(batch["compute_infer"]["ns"]) for batch in batches) / 1e9,
    }


def pytriton_dir() -> Path:
    """Where the nvidia-pytriton wheel put its files; found without importing PyTriton's Python API,
    which we do not use (and whose dependencies a bare GPU host may lack)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nvidia-pytriton is not installed: it carries the tritonserver binary")
    return Path(spec.origin).resolve().parent


def tritonserver_binary() -> Path:
    return pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def pytriton_libs_dir() -> Path:
    return pytriton_dir().parent / "nvidia_pytriton.libs"


def build_backend_directory(work_dir: Path) -> Path:
    """backends/python/ with the wheel's backend library, utils and the stub for this Python."""
    dist = pytriton_dir() / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": dist / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": dist / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": dist / "python_backend_stubs" / python_version / "triton_python_backend_stub",
    }
    backend_dir = work_dir / "backends"
    python_dir = backend_dir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.is_file():
            raise FileNotFoundError(f"nvidia-pytriton has no {source}")
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return backend_dir


def _path_list(*entries: str | None) -> str:
    return os.pathsep.join(entry for entry in entries if entry)


def triton_environment(work_dir: Path, base_model: Path) -> dict[str, str]:
    env = with_shared_cores(os.environ)
    # The stub embeds libpython and finds its prefix (and the venv) through the `python` on PATH.
    env["PATH"] = _path_list(str(Path(sys.executable).parent), env.get("PATH"))
    # Without the running interpreter's LIBDIR the system's older libpython3.11 is picked up.
    env["LD_LIBRARY_PATH"] = _path_list(
        sysconfig.get_config_var("LIBDIR"), str(pytriton_libs_dir()), env.get("LD_LIBRARY_PATH")
    )
    env["STUDIO_BASE_MODEL"] = str(base_model)
    env["STUDIO_REPO_ROOT"] = str(REPO_ROOT)
    env["HOME"] = str(work_dir / "home")
    env["HF_HOME"] = str(work_dir / "hf-home")
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYTHONHOME", None)
    return env


def tritonserver_argv(
    model_repository: Path, backend_dir: Path, models: Sequence[str], ports: dict[str, int], host: str
) -> list[str]:
    argv = [
        str(tritonserver_binary()),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_dir}",
        f"--grpc-address={host}",
        f"--grpc-port={ports['grpc']}",
        f"--http-address={host}",
        f"--http-port={ports['http']}",
        f"--metrics-address={host}",
        f"--metrics-port={ports['metrics']}",
        "--model-control-mode=explicit",
        # Our configs are complete; auto-completing them starts a stub that imports model.py (~10 s per load).
        "--disable-auto-complete-config",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECS}",
        # Several servers may run on one host: keep their /dev/shm regions apart.
        f"--backend-config=python,shm-region-prefix-name={shm_region_prefix(ports['grpc'])}",
        # Adapters travel through /dev/shm: grow it in steps a LoRA fits in, not 1 MiB at a time.
        f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
    ]
    argv += [f"--load-model={model}" for model in models]
    return argv


def shm_region_prefix(grpc_port: int) -> str:
    return f"studio_triton_{grpc_port}_"


def shm_regions(grpc_port: int) -> list[Path]:
    """The python backend's shared-memory regions of the server on `grpc_port`: every request passes through them,
    decrypted adapters and prompts included."""
    return sorted(SHM_DIR.glob(shm_region_prefix(grpc_port) + "*"))


def protect_shm_regions(grpc_port: int) -> None:
    """Boost creates the regions 0644 and fchmods them so whatever the umask: any local user could read them. A file
    under our prefix that another user planted (which we may not chmod), or a link, leaves the others protected."""
    for region in shm_regions(grpc_port):
        with suppress(FileNotFoundError, PermissionError):
            if not region.is_symlink():
                region.chmod(0o600)


class ShmGuard:
    """Makes the regions of the server on `grpc_port` private every `interval_s` while it runs, whoever runs the
    server (`studio up`, `studio demo`, tests): a model loaded anew (services/renderer/model_repair.py reloads one
    whose python stub died) gets a new stub and a new region, created readable by all."""

    def __init__(self, grpc_port: int, interval_s: float = SHM_GUARD_INTERVAL_S) -> None:
        self.grpc_port = grpc_port
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shm-guard-{grpc_port}", daemon=True)

    def start(self) -> ShmGuard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                protect_shm_regions(self.grpc_port)
            except OSError:  # /dev/shm unreadable for a moment: the next round tries again
                continue


def remove_shm_regions(grpc_port: int) -> None:
    """A killed server (or stub) leaves its regions behind, requests' bytes and all."""
    for region in shm_regions(grpc_port):
        region.unlink(missing_ok=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def _all_ready(http_url: str, metrics_url: str, models: Sequence[str]) -> bool:
    # Triton opens its metrics port last, after the HTTP API already answers ready: a caller reading a
    # counter right after start found it closed.
    urls = [f"{http_url}/v2/health/ready"] + [f"{http_url}/v2/models/{model}/ready" for model in models]
    urls.append(metrics_url)
    for url in urls:
        if not await asyncio.to_thread(_http_ok, url):
            return False
    return True


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


async def start_triton(
    model_repository: Path,
    work_dir: Path,
    log_dir: Path,
    *,
    base_model: Path,
    models: Sequence[str] = ("portrait_diffusion",),
    ready_timeout: float = READY_TIMEOUT,
    **placement: Any,
) -> TritonServer:
    """Run tritonserver with `models` loaded; returns once the server and every model are ready. `placement`:
    launch_triton's grpc_port, host and avoid (ports chosen for something not started yet)."""
    server = launch_triton(model_repository, work_dir, log_dir, base_model=base_model, models=models, **placement)
    await server.wait_ready(models, ready_timeout)
    return server


def launch_triton(
    model_repository: Path,
    work_dir: Path,
    log_dir: Path,
    *,
    base_model: Path,
    models: Sequence[str] = ("portrait_diffusion",),
    grpc_port: int | None = None,
    host: str = "127.0.0.1",
    avoid: Collection[int] = (),
) -> TritonServer:
    """Start tritonserver and return at once, its ports chosen but not bound until its models load: whatever
    starts meanwhile must avoid `server.ports`. Then await `server.wait_ready(models)`."""
    work_dir = Path(work_dir).resolve()
    for folder in (work_dir / "home", work_dir / "hf-home"):
        folder.mkdir(parents=True, exist_ok=True)
    # Distinct: tritonserver refuses to start with HTTP and gRPC on one port.
    given = [grpc_port] if grpc_port else []
    grpc, http, metrics = given + free_ports(3 - len(given), exclude=[*given, *avoid])
    ports = {"grpc": grpc, "http": http, "metrics": metrics}
    backend_dir = build_backend_directory(work_dir)
    remove_shm_regions(grpc)  # left by an earlier server on this port that was killed
    argv = tritonserver_argv(Path(model_repository).resolve(), backend_dir, models, ports, host)
    env = triton_environment(work_dir, Path(base_model).resolve())
    process = ManagedProcess("tritonserver", argv, log_dir, env=env, cwd=work_dir)
    process.start()
    return TritonServer(grpc_url=f"{_client_host(host)}:{ports['grpc']}", http_port=ports["http"],
                        metrics_port=ports["metrics"], process=process, guard=ShmGuard(grpc).start())
