"""The embedded stack: nats-server, Triton, the blob store and the five services as local
processes on one machine, started in dependency order and stopped as a whole."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.output_files import whole_file
from services.cli.stack_guard import DataDirLock, ensure_port_free
from services.common.basemodel import read_resolution
from services.common.launchers.nats import NatsServer, start_nats
from services.common.launchers.process import ManagedProcess, free_port_run, with_shared_cores
from services.common.launchers.triton import TritonServer, launch_triton
from services.common.provenance_certs import DevChainFiles, ensure_dev_chain
from services.common.secrets import ensure_secret_file, hash_api_key, new_token, write_secret_file
from services.common.signatures import SigningKey
from services.common.tinymodel import write_tiny_model
from services.common.topology import DEFAULT_STORE_BYTES, MIN_STORE_BYTES, STORE_BYTES_ENV
from services.privacy.store import stored_holdings
from services.privacy.vault import vault_path
from services.trainer.fleet import gpu_ids

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO_ROOT / "services" / "renderer" / "model_repository"
SERVICES = ("privacy", "faceqa", "trainer", "renderer", "ingest")  # start order: dependencies first
DEFAULT_TENANT = "default"
OPERATOR = "operator"  # the identity `studio keys rotate` and `studio audit` use with the vault
SERVICE_READY_TIMEOUT_S = 120.0
MIN_FACE_RESOLUTION = 256  # px; below it a base model cannot render a face faceqa would find


@dataclass(frozen=True)
class StackPaths:
    data_dir: Path

    @property
    def secrets(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def api_key_file(self) -> Path:
        return self.secrets / f"tenant-{DEFAULT_TENANT}.key"

    @property
    def tokens_file(self) -> Path:
        return self.secrets / "service-tokens.json"

    @property
    def operator_token_hash_file(self) -> Path:
        return self.secrets / "operator.token.sha256"

    def token_file(self, service: str) -> Path:
        return self.secrets / f"{service}.token"

    @property
    def nats_token_file(self) -> Path:
        """What every client of the stack's nats-server must present (beside it: the server's own configuration)."""
        return self.secrets / "nats-client.token"

    @property
    def signing_key_file(self) -> Path:
        return self.secrets / "vault-signing.key"

    @property
    def public_key_file(self) -> Path:
        """The vault's public key: what `studio certificate verify` checks certificates against."""
        return self.data_dir / "vault-signing.pub"

    @property
    def provenance(self) -> DevChainFiles:
        """The development C2PA chain: key and chain for the vault, root for `studio provenance verify`."""
        return DevChainFiles(key=self.secrets / "provenance-signing.key", chain=self.secrets / "provenance-chain.pem",
                             root=self.data_dir / "provenance-root.pem")


async def grpc_healthy(address: str, timeout_s: float = 1.0) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def all_healthy(addresses: list[str]) -> bool:
    for address in addresses:
        if not await grpc_healthy(address):
            return False
    return True


def store_budget(data_dir: Path) -> int:
    """The embedded NATS's byte budget: DEFAULT_STORE_BYTES where the disk has room, else 40% of its free space
    (nats-server reserves budgets against 75% of it, and a budget it cannot reserve stops the services)."""
    existing = next(path for path in (data_dir, *data_dir.parents) if path.exists())
    free = shutil.disk_usage(existing).free
    return max(MIN_STORE_BYTES, min(DEFAULT_STORE_BYTES, int(free * 0.4)))


@dataclass
class EmbeddedStack:
    data_dir: Path
    base_model: Path | None = None
    public_port: int = 50051
    blob_url: str | None = field(default=None, repr=False)  # s3://ACCESS:SECRET@…: never in a repr
    extra_env: dict[str, str] = field(default_factory=dict, repr=False)  # may carry secrets too
    # Accepted photos a subject needs before an order; None = ingest's default (10).
    min_accepted_photos: int | None = None
    nats: NatsServer | None = None
    triton: TritonServer | None = None
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    # Every instance's address: one per service, one per GPU for the trainer fleet.
    instances: dict[str, list[str]] = field(default_factory=dict)
    data_dir_lock: DataDirLock | None = None

    def __post_init__(self) -> None:
        # Services run with the repository as their working directory: every path they get is absolute.
        self.data_dir = Path(self.data_dir).resolve()
        if self.base_model is not None:  # a command line's str is welcome too
            self.base_model = Path(self.base_model)

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.data_dir)

    @property
    def public_endpoint(self) -> str:
        return f"127.0.0.1:{self.public_port}"

    async def start(self, progress=lambda message: None) -> None:
        try:
            await self._start(progress)
        except BaseException:
            self.stop()
            raise

    async def _start(self, progress) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir_lock = DataDirLock(self.data_dir)
        ensure_port_free(self.public_port)
        self._prepare_secrets()
        base_model = self._base_model(progress)
        progress("starting nats-server")
        self.nats = await start_nats(self.data_dir / "nats", self.paths.logs, avoid={self.public_port},
                                     token_file=self.paths.nats_token_file)
        progress("starting tritonserver")
        self.triton = launch_triton(MODEL_REPOSITORY, self.data_dir / "triton", self.paths.logs,
                                    base_model=base_model, avoid={self.public_port})
        # Triton loads its model while the services start: none calls it before a render job comes.
        triton_ready = asyncio.ensure_future(self.triton.wait_ready())
        try:
            for service in SERVICES:
                progress(f"starting {service}")
                await self._start_service(service, base_model)
            progress("waiting for tritonserver to load its model")
            await triton_ready
        finally:
            triton_ready.cancel()
        self.write_stack_file()

    def _prepare_secrets(self) -> None:
        tokens = {service: new_token() for service in (*SERVICES, OPERATOR)}
        raw = ensure_secret_file(self.paths.tokens_file, lambda: json.dumps(tokens).encode())
        for service, token in json.loads(raw).items():
            write_secret_file(self.paths.token_file(service), token.encode())
        ensure_secret_file(self.paths.api_key_file, lambda: f"sk_{secrets.token_urlsafe(32)}".encode())
        # ingest checks `studio tenants` calls against the operator token's hash, never the token itself.
        operator_token = self.paths.token_file(OPERATOR).read_text().strip()
        write_secret_file(self.paths.operator_token_hash_file, hash_api_key(operator_token).encode())
        # A lost signing key is refused where the vault holds documents it signed (as the vault itself refuses).
        signed = stored_holdings(vault_path(self.data_dir)).signed_documents
        signer = SigningKey.from_file(self.paths.signing_key_file, create=not signed)
        self.paths.public_key_file.write_text(signer.public_pem)
        ensure_dev_chain(self.paths.provenance)

    def _base_model(self, progress) -> Path:
        if self.base_model:
            return self.base_model.resolve()
        tiny = self.data_dir / "models" / "tiny"
        if not (tiny / "model_index.json").exists():
            progress("generating the tiny random-weight model")
            write_tiny_model(tiny)
        return tiny

    def _service_env(self, service: str, base_model: Path, listen: str) -> dict[str, str]:
        assert self.nats and self.triton
        blob_url = self.blob_url or f"file://{(self.data_dir / 'blobs').resolve()}"
        env = {
            **with_shared_cores(os.environ),
            "STUDIO_LISTEN": listen,
            "STUDIO_DATA_DIR": str(self.data_dir.resolve()),
            "STUDIO_NATS_URL": self.nats.address,
            "STUDIO_NATS_TOKEN_FILE": str(self.paths.nats_token_file),
            STORE_BYTES_ENV: os.environ.get(STORE_BYTES_ENV) or str(store_budget(self.data_dir)),
            "STUDIO_BLOB_URL": blob_url,
            "STUDIO_BASE_MODEL": str(base_model),
            "STUDIO_TRITON_URL": self.triton.grpc_url,
            "STUDIO_SERVICE_TOKEN_FILE": str(self.paths.token_file(service)),
            **{f"STUDIO_{name.upper()}_ADDR": address for name, address in self.addresses.items()},
            **self._secrets_only_for(service),
            **self._ranking_for(service, base_model),
            **self.extra_env,
        }
        return env

    def _secrets_only_for(self, service: str) -> dict[str, str]:
        """Each service is told only of the secret files it needs: the vault alone knows the master
        key and every service's token; ingest alone bootstraps the default tenant."""
        if service == "privacy":
            return {
                "STUDIO_SERVICE_TOKENS_FILE": str(self.paths.tokens_file),
                "STUDIO_KEK_FILE": str(self.paths.secrets / "master-key.json"),
                "STUDIO_SIGNING_KEY_FILE": str(self.paths.signing_key_file),
                "STUDIO_PROVENANCE_KEY_FILE": str(self.paths.provenance.key),
                "STUDIO_PROVENANCE_CHAIN_FILE": str(self.paths.provenance.chain),
            }
        if service == "ingest":
            minimum = {"STUDIO_MIN_ACCEPTED_PHOTOS": str(self.min_accepted_photos)} if self.min_accepted_photos else {}
            return {"STUDIO_BOOTSTRAP_API_KEY_FILE": str(self.paths.api_key_file),
                    "STUDIO_BOOTSTRAP_TENANT": DEFAULT_TENANT,
                    "STUDIO_OPERATOR_TOKEN_HASH_FILE": str(self.paths.operator_token_hash_file), **minimum}
        return {}

    def _ranking_for(self, service: str, base_model: Path) -> dict[str, str]:
        """A base model too small to draw a face (the tiny model) cannot be ranked by identity: its
        portraits are delivered unscored (services/renderer/ranking.py)."""
        if service != "renderer" or read_resolution(base_model) >= MIN_FACE_RESOLUTION:
            return {}
        return {"STUDIO_RENDER_RANKING": "unscored"}

    async def _start_service(self, service: str, base_model: Path) -> None:
        module, instances = f"services.{service}", 1
        if service == "trainer" and (gpus := self.trainer_gpus()):
            module, instances = "services.trainer.fleet", len(gpus)  # one worker per GPU
        # the public port and this service's listen ports are not bound yet: the kernel may offer them again
        assert self.triton  # launched first; its ports are not bound until its model loads
        reserved = {self.public_port, *self.triton.ports}
        port = self.public_port if service == "ingest" else free_port_run(instances, exclude=reserved)
        listen = f"127.0.0.1:{port}"
        env = self._service_env(service, base_model, listen)
        reserved.update(range(port, port + instances))
        env["STUDIO_METRICS_PORT"] = str(free_port_run(instances, exclude=reserved))
        process = ManagedProcess(service, [sys.executable, "-m", module], self.paths.logs, env=env, cwd=REPO_ROOT)
        process.start()
        self.processes[service] = process
        addresses = [f"127.0.0.1:{port + index}" for index in range(instances)]
        await process.wait_ready(lambda: all_healthy(addresses), timeout=SERVICE_READY_TIMEOUT_S)
        self.addresses[service] = listen
        self.instances[service] = addresses

    def trainer_gpus(self) -> list[str]:
        """GPUs for the trainer fleet: STUDIO_TRAINER_GPUS, else every GPU on a host with a driver;
        none (one CPU worker) on a host without. Torch is imported only where a driver exists."""
        env = {**os.environ, **self.extra_env}
        if env.get("STUDIO_TRAINER_GPUS") or shutil.which("nvidia-smi"):
            return gpu_ids(env)
        return []

    async def restart_service(self, service: str) -> None:
        """Start one service again with the same settings (after it crashed or was killed)."""
        self.processes[service].stop()
        await self._start_service(service, self._base_model(lambda message: None))

    def write_stack_file(self) -> None:
        """DATA/stack.json: where everything listens, and each process's pid (rewritten after a restart)."""
        assert self.nats and self.triton
        pids = {"nats-server": self.nats.process.pid, "tritonserver": self.triton.process.pid}
        pids.update({service: process.pid for service, process in self.processes.items()})
        stack = {
            "public_endpoint": self.public_endpoint, "api_key_file": str(self.paths.api_key_file),
            "nats_url": self.nats.address, "triton_grpc": self.triton.grpc_url,
            "triton_metrics": f"http://127.0.0.1:{self.triton.metrics_port}/metrics",
            "services": self.addresses, "instances": self.instances, "logs": str(self.paths.logs), "pid": os.getpid(),
            "pids": pids,
        }
        with whole_file(self.data_dir / "stack.json", as_json=False) as handle:  # readers never see half a file
            handle.write(json.dumps(stack, indent=2).encode())

    def stop(self) -> None:
        """Stop everything this stack started, most dependent first; safe to call twice. Triton, which takes
        seconds to unload its model and which no service needs to shut down, stops alongside the services."""
        with ThreadPoolExecutor(max_workers=1) as alongside:
            triton_stopped = alongside.submit(self.triton.stop) if self.triton else None
            for service in reversed(SERVICES):
                if service in self.processes:
                    self.processes[service].stop()
        if triton_stopped:
            triton_stopped.result()
        if self.nats:
            self.nats.stop()
        if self.data_dir_lock:  # a stack refused for a held data directory leaves the holder's stack.json be
            (self.data_dir / "stack.json").unlink(missing_ok=True)
            self.data_dir_lock.release()
            self.data_dir_lock = None
