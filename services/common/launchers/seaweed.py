"""Start a single-process SeaweedFS (master, volume, filer, S3 gateway) for tests and local use."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import urllib3
from minio import Minio

from services.common.launchers.binaries import find_binary
from services.common.launchers.process import ManagedProcess, port_is_free

READY_TIMEOUT = 60.0
# The filer waits up to 15 s (hard-coded) for its gRPC streams before exiting on SIGTERM.
CLEAN_STOP_TIMEOUT = 20.0
# weed derives a gRPC port as http port + 10000 when none is given; we pass every gRPC port
# explicitly, but keep the derived ones free too in case a component ignores the flag.
GRPC_OFFSET = 10000
ACCESS_KEY = "studio"
# SeaweedFS accepts any region; naming one spares minio a bucket-location lookup per bucket.
REGION = "us-east-1"
# sun_path is 108 bytes on Linux; longer socket paths fall back to weed's /tmp default.
MAX_UNIX_SOCKET_PATH = 100
COMPONENTS = ("master", "volume", "filer", "s3")


@dataclass(frozen=True)
class SeaweedPorts:
    master: int
    volume: int
    filer: int
    s3: int

    def grpc(self, component: str) -> int:
        return getattr(self, component) + GRPC_OFFSET


@dataclass
class SeaweedS3:
    endpoint: str
    access_key: str
    secret_key: str
    process: ManagedProcess
    ports: SeaweedPorts

    def stop(self, timeout: float = CLEAN_STOP_TIMEOUT) -> None:
        """Stop weed; a timeout under 15 s ends in SIGKILL, fine for throwaway test data."""
        self.process.stop(timeout)
        _remove_stray_grpc_sockets(self.ports)

    def client(self, http_client: urllib3.PoolManager | None = None) -> Minio:
        return Minio(
            self.endpoint,
            self.access_key,
            self.secret_key,
            secure=False,
            region=REGION,
            http_client=http_client,
        )

    @property
    def url(self) -> str:
        """The blob store URL form (s3://ACCESS:SECRET@host:port/BUCKET) without the bucket."""
        return f"s3://{quote(self.access_key, safe='')}:{quote(self.secret_key, safe='')}@{self.endpoint}"

    def __repr__(self) -> str:
        return f"SeaweedS3(endpoint={self.endpoint!r}, access_key={self.access_key!r})"


def _free_port_pair() -> int:
    """A free port p with p + GRPC_OFFSET also free."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + GRPC_OFFSET <= 65535 and port_is_free(port + GRPC_OFFSET):
            return port
        # Kernel-chosen ports are often too high to add 10000; try a random lower one.
        port = 20000 + secrets.randbelow(25000)
        if port_is_free(port) and port_is_free(port + GRPC_OFFSET):
            return port


def _choose_ports() -> SeaweedPorts:
    taken: set[int] = set()
    picks: list[int] = []
    while len(picks) < len(COMPONENTS):
        port = _free_port_pair()
        if {port, port + GRPC_OFFSET} & taken:
            continue
        taken |= {port, port + GRPC_OFFSET}
        picks.append(port)
    return SeaweedPorts(*picks)


def _write_s3_config(path: Path, access_key: str, secret_key: str) -> None:
    identity = {
        "name": "studio",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps({"identities": [identity]}, indent=2))


def _write_master_toml(directory: Path) -> None:
    """weed reads master.toml from its working directory: grow one volume per new bucket, not 7."""
    (directory / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")


def _local_socket_flags(data_dir: Path) -> list[str]:
    flags = []
    for component in ("filer", "s3"):
        path = data_dir / f"{component}.sock"
        if len(str(path)) <= MAX_UNIX_SOCKET_PATH:
            flags.append(f"-{component}.localSocket={path}")
    return flags


def _argv(data_dir: Path, ports: SeaweedPorts, s3_config: Path) -> list[str]:
    port_flags = []
    for component in COMPONENTS:
        port_flags.append(f"-{component}.port={getattr(ports, component)}")
        port_flags.append(f"-{component}.port.grpc={ports.grpc(component)}")
    return [
        find_binary("weed"),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *port_flags,
        "-filer",
        "-s3",
        f"-s3.config={s3_config}",
        "-master.volumeSizeLimitMB=64",
        # Every bucket is a collection with its own volumes; the default cap of 8 volumes runs
        # out after two buckets. 0 means "as many as the free disk space allows".
        "-volume.max=0",
        "-master.telemetry=false",
        # Default: 10 s of draining after SIGTERM before the volume server stops.
        "-volume.preStopSeconds=0",
        # Both default to fixed ports (8181, 9101) that would clash between parallel servers.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *_local_socket_flags(data_dir),
    ]


def _remove_stray_grpc_sockets(ports: SeaweedPorts) -> None:
    """weed also serves gRPC on /tmp/seaweedfs-<component>-grpc-<port>.sock; a killed weed leaves them."""
    for component in COMPONENTS:
        path = Path(f"/tmp/seaweedfs-{component}-grpc-{ports.grpc(component)}.sock")
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            pass


def _can_list_buckets(client: Minio) -> bool:
    try:
        client.list_buckets()
    except Exception:  # any failure means "not ready yet"
        return False
    return True


async def start_seaweed_s3(data_dir: Path, log_dir: Path) -> SeaweedS3:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = _choose_ports()
    secret_key = secrets.token_urlsafe(24)
    s3_config = data_dir / "s3-identities.json"
    _write_s3_config(s3_config, ACCESS_KEY, secret_key)
    _write_master_toml(data_dir)
    argv = _argv(data_dir, ports, s3_config)
    process = ManagedProcess(f"weed-{ports.s3}", argv, log_dir, cwd=data_dir)
    process.start()
    server = SeaweedS3(f"127.0.0.1:{ports.s3}", ACCESS_KEY, secret_key, process, ports)
    # minio's default client retries refused connections with backoff, which would slow each probe.
    probe = server.client(urllib3.PoolManager(timeout=2.0, retries=False))

    async def ready() -> bool:
        return await asyncio.to_thread(_can_list_buckets, probe)

    try:
        await process.wait_ready(ready, READY_TIMEOUT)
    except BaseException:
        server.stop(timeout=1)
        raise
    return server
