"""A subject's first accepted headshot anchors its identity, even when uploads race on two ingest replicas.

A second ingest replica runs beside the session stack's, its calls to faceqa through a proxy that holds each call
until the test lets it through: an upload on the replica has read the subject (no headshot yet) and waits for its
verdicts while another upload, on the stack's own ingest, lands first. Nothing is mocked: real processes, NATS,
faceqa and store."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from studio.v1 import studio_pb2

from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common.launchers.process import ManagedProcess, free_port
from services.ingest.upload_photos import MAX_JUDGEMENTS
from studio_client import NO_RETRIES, Photo, StudioClient
from tests.fixtures_stack import FACES_DIR
from tests.fixtures_tenants import (  # noqa: F401  (fixtures)
    HEADSHOT,
    REFERENCE,
    Tenants,
    admin,
    lisa_headshot,
    lisa_references,
    tenants,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

HTTP2_PREFACE_BYTES = 24
HTTP2_FRAME_HEADER_BYTES = 9
HTTP2_HEADERS = 0x1  # the frame that opens a stream: a new gRPC call
ARRIVAL_TIMEOUT_S = 120.0


class CallHoldingProxy:
    """A TCP proxy that reads the HTTP/2 frames its client sends: each call the client opens (a HEADERS frame) waits,
    with all the client sends after it, until the test lets that many calls through. Replies pass freely."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.calls = 0  # calls the client opened
        self.let_through = 0  # calls allowed on to the server
        self.endpoint = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.endpoint = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.endpoint

    def release(self, calls: int = 1) -> None:
        self.let_through += calls

    def release_held(self) -> None:
        self.let_through = max(self.let_through, self.calls)

    async def arrived(self, calls: int) -> None:
        """Wait until the client has opened `calls` calls in all."""
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        while self.calls < calls:
            assert time.monotonic() < deadline, f"{self.calls} call(s) arrived, not {calls}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._server:
            self._server.close()
        self.release_held()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._connections, return_exceptions=True), 5)

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._connections.add(asyncio.current_task())
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(self._calls(client_reader, server_writer), _pipe(server_reader, client_writer),
                             return_exceptions=True)
        for writer in (client_writer, server_writer):
            writer.transport.abort()
            self._writers.discard(writer)

    async def _calls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(HTTP2_PREFACE_BYTES))
        while True:
            header = await reader.readexactly(HTTP2_FRAME_HEADER_BYTES)
            payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
            if header[3] == HTTP2_HEADERS:
                self.calls += 1
                while self.let_through < self.calls:
                    await asyncio.sleep(0.01)
            writer.write(header + payload)
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@dataclass
class Replica:
    endpoint: str
    faceqa: CallHoldingProxy


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replica(stack: EmbeddedStack) -> AsyncIterator[Replica]:
    """A second ingest process on the stack's NATS and store, reaching faceqa through a CallHoldingProxy."""
    proxy = CallHoldingProxy(stack.addresses["faceqa"])
    await proxy.start()
    port = free_port()
    env = stack._service_env("ingest", stack._base_model(lambda message: None), f"127.0.0.1:{port}")
    env["STUDIO_FACEQA_ADDR"] = proxy.endpoint
    process = ManagedProcess("ingest-replica", [sys.executable, "-m", "services.ingest"], stack.paths.logs,
                             env=env, cwd=REPO_ROOT)
    process.start()
    try:
        await process.wait_ready(lambda: grpc_healthy(f"127.0.0.1:{port}"), timeout=120)
        yield Replica(f"127.0.0.1:{port}", proxy)
    finally:
        process.stop()
        await proxy.close()


@pytest_asyncio.fixture(loop_scope="session")
async def faceqa_gate(replica: Replica) -> AsyncIterator[CallHoldingProxy]:
    """The replica's way to faceqa; a call a failed test left held is let through after it."""
    try:
        yield replica.faceqa
    finally:
        replica.faceqa.release_held()


def london(name: str) -> Path:
    path = FACES_DIR / "london" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"no London photos in {FACES_DIR}")
    return path


def photo(path: Path, role: int) -> Photo:
    return Photo.from_path(path, role)


async def two_clients(tenants: Tenants, replica: Replica, **settings) -> tuple[StudioClient, StudioClient]:  # noqa: F811
    """One tenant's clients, without retries: to the stack's ingest, and to the replica."""
    _, direct = await tenants.new(**settings)
    api_key = direct.metadata[0][1]
    return tenants.client(api_key, retry=NO_RETRIES), tenants.client(api_key, replica.endpoint, retry=NO_RETRIES)


def blob_names(stack: EmbeddedStack, subject_id: str, area: str) -> set[str]:
    return {p.name for p in (stack.data_dir / "blobs").rglob("*") if f"/{subject_id}/{area}/" in str(p) and p.is_file()}


async def accepted(client: StudioClient, subject_id: str) -> list[studio_pb2.PhotoSummary]:
    return [p for p in (await client.get_subject(subject_id)).photos if p.verdict.accepted]


def reasons(summaries: list[studio_pb2.PhotoSummary]) -> list[list[str]]:
    return [list(summary.verdict.reasons) for summary in summaries]


def assert_kept_only(stack: EmbeddedStack, subject_id: str, kept: list[studio_pb2.PhotoSummary]) -> None:
    """The store holds the kept photos and their crops, nothing of any other upload."""
    ids = {summary.photo_id for summary in kept}
    assert blob_names(stack, subject_id, "photos") == ids
    assert blob_names(stack, subject_id, "crops") == {f"{photo_id}.png" for photo_id in ids}


async def test_one_upload_with_the_first_headshot_is_accepted_and_anchors_the_subject(
    stack: EmbeddedStack, tenants: Tenants  # noqa: F811
) -> None:
    _, main = await tenants.new()
    subject_id = (await main.create_subject()).subject_id
    first = await main.upload_photos(subject_id, [photo(london("001_neutral"), HEADSHOT),
                                                  photo(london("001_smiling"), REFERENCE)])
    assert reasons(first.photos) == [[], []] and first.set_verdict.headshot_accepted
    later = await main.upload_photos(subject_id, [photo(london("002_neutral"), HEADSHOT)])
    assert reasons(later.photos) == [["IDENTITY_MISMATCH"]]
    assert {p.filename for p in await accepted(main, subject_id)} == {"001_neutral.jpg", "001_smiling.jpg"}
    assert_kept_only(stack, subject_id, first.photos)


async def test_racing_first_headshots_of_two_people_leave_one_identity(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica, faceqa_gate: CallHoldingProxy  # noqa: F811
) -> None:
    main, other = await two_clients(tenants, replica)
    subject_id = (await main.create_subject()).subject_id
    start = faceqa_gate.calls
    second = asyncio.create_task(other.upload_photos(subject_id, [photo(london("002_neutral"), HEADSHOT),
                                                                  photo(london("002_smiling"), REFERENCE)]))
    await faceqa_gate.arrived(start + 1)  # the replica read the subject, with no headshot, and asks for verdicts
    first = await main.upload_photos(subject_id, [photo(london("001_neutral"), HEADSHOT),
                                                  photo(london("001_smiling"), REFERENCE)])
    assert reasons(first.photos) == [[], []]
    faceqa_gate.release(2)  # its verdicts, judged with no headshot; then its photos judged again, with one
    late = await second
    assert reasons(late.photos) == [["IDENTITY_MISMATCH"], ["IDENTITY_MISMATCH"]]
    kept = await accepted(main, subject_id)
    assert {p.filename for p in kept} == {"001_neutral.jpg", "001_smiling.jpg"}
    assert sum(p.role == HEADSHOT for p in kept) == 1
    assert_kept_only(stack, subject_id, kept)


async def test_references_judged_before_the_first_headshot_landed_are_judged_against_it(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica, faceqa_gate: CallHoldingProxy  # noqa: F811
) -> None:
    main, other = await two_clients(tenants, replica)
    subject_id = (await main.create_subject()).subject_id
    start = faceqa_gate.calls
    strangers = asyncio.create_task(other.upload_photos(subject_id, [photo(london("002_smiling"), REFERENCE)]))
    await faceqa_gate.arrived(start + 1)
    await main.upload_photos(subject_id, [photo(london("001_neutral"), HEADSHOT)])
    faceqa_gate.release(2)
    assert reasons((await strangers).photos) == [["IDENTITY_MISMATCH"]]
    kept = await accepted(main, subject_id)
    assert [p.filename for p in kept] == ["001_neutral.jpg"]
    assert_kept_only(stack, subject_id, kept)


async def test_a_first_headshot_is_judged_with_the_photos_that_landed_while_it_was_checked(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica, faceqa_gate: CallHoldingProxy  # noqa: F811
) -> None:
    main, other = await two_clients(tenants, replica)
    subject_id = (await main.create_subject()).subject_id
    start = faceqa_gate.calls
    anchoring = asyncio.create_task(other.upload_photos(subject_id, [photo(london("002_neutral"), HEADSHOT)]))
    await faceqa_gate.arrived(start + 1)
    landed = await main.upload_photos(subject_id, [photo(london("001_smiling"), REFERENCE)])
    assert reasons(landed.photos) == [[]]  # no headshot yet: no identity to match
    faceqa_gate.release(2)
    assert reasons((await anchoring).photos) == [[]]
    record = {p.photo_id: p for p in (await main.get_subject(subject_id)).photos}
    assert list(record[landed.photos[0].photo_id].verdict.reasons) == ["IDENTITY_MISMATCH"]
    kept = await accepted(main, subject_id)
    assert [p.filename for p in kept] == ["002_neutral.jpg"]
    assert_kept_only(stack, subject_id, kept)


async def test_an_upload_the_subject_keeps_changing_under_is_refused_keeping_nothing_and_its_retry_is_judged(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica, faceqa_gate: CallHoldingProxy  # noqa: F811
) -> None:
    """Each time its photos are judged, another upload lands first; after MAX_JUDGEMENTS it is refused with ABORTED
    (which studio_client retries), and gives back all it held: its retry fits in the day's byte quota, which has
    room for each photo once."""
    landing = [*lisa_references()[:MAX_JUDGEMENTS - 1], lisa_headshot()]
    refused = [photo(london("002_neutral"), HEADSHOT), photo(lisa_references()[MAX_JUDGEMENTS - 1], REFERENCE)]
    day_bytes = sum(path.stat().st_size for path in landing) + sum(len(p.data) for p in refused)
    main, other = await two_clients(tenants, replica, max_upload_bytes_per_day=day_bytes)
    subject_id = (await main.create_subject()).subject_id
    start = faceqa_gate.calls
    changed_under = asyncio.create_task(other.upload_photos(subject_id, refused))
    for judgement, path in enumerate(landing, start=1):
        await faceqa_gate.arrived(start + judgement)
        role = HEADSHOT if path == lisa_headshot() else REFERENCE
        assert reasons((await main.upload_photos(subject_id, [photo(path, role)])).photos) == [[]]
        faceqa_gate.release()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await changed_under
    assert raised.value.code() == grpc.StatusCode.ABORTED and "send the photos again" in raised.value.details()
    kept = await accepted(main, subject_id)
    assert len((await main.get_subject(subject_id)).photos) == len(kept) == len(landing)
    assert_kept_only(stack, subject_id, kept)

    retried = await main.upload_photos(subject_id, refused)
    assert reasons(retried.photos) == [["IDENTITY_MISMATCH"], []]  # judged against lisa's headshot
    kept = await accepted(main, subject_id)
    assert sum(p.role == HEADSHOT for p in kept) == 1 and len(kept) == len(landing) + 1
    assert_kept_only(stack, subject_id, kept)


async def test_the_set_verdict_counts_the_photos_of_uploads_that_landed_meanwhile(
    stack: EmbeddedStack, tenants: Tenants, replica: Replica, faceqa_gate: CallHoldingProxy  # noqa: F811
) -> None:
    main, other = await two_clients(tenants, replica)
    subject_id = (await main.create_subject()).subject_id
    await main.upload_photos(subject_id, [photo(lisa_headshot(), HEADSHOT)])
    start = faceqa_gate.calls
    late = asyncio.create_task(other.upload_photos(subject_id, [photo(lisa_references()[0], REFERENCE)]))
    await faceqa_gate.arrived(start + 1)  # judged with the headshot alone
    landed = await main.upload_photos(subject_id, [photo(lisa_references()[1], REFERENCE)])
    assert landed.set_verdict.accepted_photos == 2
    faceqa_gate.release(2)
    assert (await late).set_verdict.accepted_photos == 3
    subject = await main.get_subject(subject_id)
    assert subject.set_verdict.accepted_photos == len(await accepted(main, subject_id)) == 3
