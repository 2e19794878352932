"""Tenant isolation over every public RPC, and ExportSubject, against the real stack.

One owner tenant holds a subject with a finished order (a portrait) and a deleted subject; a foreign
tenant calls every RPC on them and must get NOT_FOUND worded exactly like a missing id, leaving
everything as it was. The owner's export holds every part and nothing of its other subjects."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from studio.v1 import common_pb2, studio_pb2

from services.cli.stack import REPO_ROOT, EmbeddedStack
from studio_client import AdminClient, StudioClient
from tests.fixtures_tenants import HEADSHOT, REFERENCE, STYLE, lisa_headshot, lisa_references, operator_token

pytestmark = pytest.mark.asyncio(loop_scope="session")
MISSING = {"subject": "subj_00000000000000000000", "order": "order_00000000000000000000"}


@dataclass
class World:
    owner: StudioClient
    foreign: StudioClient
    subject_id: str
    other_subject_id: str
    order_id: str
    portrait_id: str
    deleted_subject_id: str
    deletion_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(stack: EmbeddedStack) -> AsyncIterator[World]:
    admin = AdminClient(stack.public_endpoint, operator_token(stack))
    owner = StudioClient(stack.public_endpoint, (await admin.create("isolation-owner", min_accepted_photos=1)).api_key)
    foreign = StudioClient(stack.public_endpoint, (await admin.create("isolation-foreign")).api_key)
    try:
        subject = await owner.create_subject(external_ref="owner-customer", idempotency_key="shared-key")
        await owner.upload(subject.subject_id, [(lisa_headshot(), HEADSHOT), (lisa_references()[0], REFERENCE)])
        order = await owner.create_order(subject.subject_id, STYLE, 1)
        async for response in owner.watch(order.order_id, timeout_s=300):
            last = response.event
        assert last.WhichOneof("kind") == "done", last
        other = await owner.create_subject(external_ref="someone-else")
        await owner.upload(other.subject_id, [(lisa_references()[1], REFERENCE)])
        doomed = await owner.create_subject()
        deletion = await owner.delete_subject(doomed.subject_id)
        yield World(owner, foreign, subject.subject_id, other.subject_id, order.order_id,
                    last.done.portraits[0].portrait_id, doomed.subject_id, deletion.deletion_id)
    finally:
        for client in (owner, foreign, admin):
            await client.close()


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def _upload(subject_id: str):
    async def requests():
        yield studio_pb2.UploadPhotosRequest(header=studio_pb2.PhotoHeader(
            subject_id=subject_id, role=REFERENCE, filename="x.jpg"))
        yield studio_pb2.UploadPhotosRequest(chunk=lisa_references()[2].read_bytes())

    return requests()


# Every public RPC that names a resource, as (name, call(stub, ids)): ids = subject, order, portrait, deletion.
RPCS = {
    "GetSubject": lambda s, i: s.GetSubject(studio_pb2.GetSubjectRequest(subject_id=i["subject"])),
    "UploadPhotos": lambda s, i: s.UploadPhotos(_upload(i["subject"])),
    "CreateOrder": lambda s, i: s.CreateOrder(studio_pb2.CreateOrderRequest(
        subject_id=i["subject"], styles=STYLE, count=1)),
    "GetOrder": lambda s, i: s.GetOrder(studio_pb2.GetOrderRequest(order_id=i["order"])),
    "WatchOrder": lambda s, i: _drain(s.WatchOrder(studio_pb2.WatchOrderRequest(order_id=i["order"]))),
    "DownloadPortrait": lambda s, i: _drain(s.DownloadPortrait(studio_pb2.DownloadPortraitRequest(
        order_id=i["order"], portrait_id=i["portrait"]))),
    "CancelOrder": lambda s, i: s.CancelOrder(studio_pb2.CancelOrderRequest(order_id=i["order"])),
    "DeleteSubject": lambda s, i: s.DeleteSubject(studio_pb2.DeleteSubjectRequest(subject_id=i["subject"])),
    "RevokeConsent": lambda s, i: s.RevokeConsent(studio_pb2.RevokeConsentRequest(subject_id=i["subject"])),
    "GetDeletion": lambda s, i: s.GetDeletion(studio_pb2.GetDeletionRequest(deletion_id=i["deletion"])),
    "GetDeletionBySubject": lambda s, i: s.GetDeletion(studio_pb2.GetDeletionRequest(subject_id=i["deleted"])),
    "ExportSubject": lambda s, i: _drain(s.ExportSubject(studio_pb2.ExportSubjectRequest(subject_id=i["subject"]))),
    "ListOrdersOfSubject": lambda s, i: s.ListOrders(studio_pb2.ListOrdersRequest(subject_id=i["subject"])),
}


async def _not_found(client: StudioClient, call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _with_metadata(client, call)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    return raised.value.details()


async def _with_metadata(client: StudioClient, call):
    class Stub:  # the raw stub with the client's credentials and a deadline on every call
        def __getattr__(self, name):
            method = getattr(client.stub, name)
            return lambda request: method(request, metadata=client.metadata, timeout=30)

    return await call(Stub())


def _missing_ids(world: World) -> dict[str, str]:
    return {"subject": MISSING["subject"], "order": MISSING["order"], "portrait": world.portrait_id,
            "deletion": "del_00000000000000000000", "deleted": MISSING["subject"]}


def _masked(details: str, ids: dict[str, str]) -> str:
    for key in ids:
        details = details.replace(ids[key], "ID")
    return details


@pytest.mark.parametrize("rpc", sorted(RPCS))
async def test_a_foreign_tenant_gets_not_found_like_a_missing_id(world: World, rpc: str) -> None:
    real = {"subject": world.subject_id, "order": world.order_id, "portrait": world.portrait_id,
            "deletion": world.deletion_id, "deleted": world.deleted_subject_id}
    missing = _missing_ids(world)
    foreign = await _not_found(world.foreign, lambda stub: RPCS[rpc](stub, real))
    absent = await _not_found(world.foreign, lambda stub: RPCS[rpc](stub, missing))
    assert _masked(foreign, real) == _masked(absent, missing)


# Ids NATS KV keys cannot hold, or not of the shape new_id gives: answered exactly like a missing id.
MALFORMED = ("bad id", "x*", "x.", "ä")


@pytest.mark.parametrize("malformed", MALFORMED)
@pytest.mark.parametrize("rpc", sorted(RPCS))
async def test_a_malformed_id_gets_not_found_like_a_missing_id(world: World, rpc: str, malformed: str) -> None:
    missing = _missing_ids(world)
    bad = {"subject": malformed, "order": malformed, "portrait": world.portrait_id, "deletion": malformed,
           "deleted": malformed}
    wrong = await _not_found(world.foreign, lambda stub: RPCS[rpc](stub, bad))
    absent = await _not_found(world.foreign, lambda stub: RPCS[rpc](stub, missing))
    assert _masked(wrong, bad) == _masked(absent, missing)


async def test_the_owner_is_untouched_by_the_foreign_calls(world: World) -> None:
    order = await world.owner.get_order(world.order_id)
    assert order.state == common_pb2.ORDER_STATE_DONE and not order.failure_stage  # not cancelled
    assert len((await world.owner.get_subject(world.subject_id)).photos) == 2  # nothing uploaded
    assert [o.order_id for o in (await world.owner.list_orders(subject_id=world.subject_id)).orders] == [
        world.order_id]  # nothing ordered
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # nothing deleted
        await world.owner.get_deletion(subject_id=world.subject_id)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(await world.owner.download(world.order_id, world.portrait_id)) > 0


async def test_listings_and_idempotency_keys_are_per_tenant(world: World) -> None:
    assert world.subject_id not in {s.subject_id async for s in world.foreign.all_subjects()}
    assert world.order_id not in {o.order_id for o in (await world.foreign.list_orders()).orders}
    own = await world.foreign.create_subject(idempotency_key="shared-key")
    assert own.subject_id != world.subject_id
    owned = {s.subject_id async for s in world.owner.all_subjects()}
    assert {world.subject_id, world.other_subject_id} <= owned and world.deleted_subject_id not in owned


async def test_get_order_returns_its_history(world: World) -> None:
    response = await world.owner.get_order_with_history(world.order_id)
    kinds = [event.WhichOneof("kind") for event in response.history]
    assert kinds[0] == "queued" and kinds[-1] == "done" and "trained" in kinds
    # Repeated progress is folded into its latest; the order waits twice (for training, then rendering).
    assert all(kind != following for kind, following in zip(kinds, kinds[1:], strict=False)), kinds
    assert kinds.count("training") == 1


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


async def test_export_holds_every_part_and_nothing_of_another_subject(world: World) -> None:
    buffer = io.BytesIO()
    info = await world.owner.export_subject(world.subject_id, buffer)
    assert info.content_type == "application/x-tar"
    members = _members(buffer.getvalue())
    subject = await world.owner.get_subject(world.subject_id)
    photos = {p.photo_id: p for p in subject.photos}
    expected = {"subject.json", "consent.json", "photos/verdicts.json", "audit.jsonl", "manifest.json",
                f"orders/{world.order_id}/order.json", f"orders/{world.order_id}/{world.portrait_id}.png",
                *(f"photos/{p.photo_id}-{p.filename}" for p in subject.photos)}
    assert set(members) == expected
    headshot = next(p for p in photos.values() if p.role == HEADSHOT)
    assert members[f"photos/{headshot.photo_id}-{headshot.filename}"] == lisa_headshot().read_bytes()
    portrait = await world.owner.download(world.order_id, world.portrait_id)
    assert members[f"orders/{world.order_id}/{world.portrait_id}.png"] == portrait
    consent = json.loads(members["consent.json"])
    assert consent["agreement_version"] == "2026-01" and consent["scopes"] == ["CONSENT_SCOPE_PORTRAIT_GENERATION"]
    order = json.loads(members[f"orders/{world.order_id}/order.json"])
    assert order["order"]["state"] == "ORDER_STATE_DONE" and order["history"][-1]["done"]
    audit = [json.loads(line) for line in members["audit.jsonl"].decode().splitlines()]
    assert {entry["subject_id"] for entry in audit} == {world.subject_id}
    assert {"RegisterSubject", "GetDataKey"} <= {entry["action"] for entry in audit}
    manifest = json.loads(members["manifest.json"])
    assert {f["name"] for f in manifest["files"]} == expected - {"manifest.json"}
    assert manifest["derived_data_not_exported"]["aligned_face_crops"] == 2
    for name, data in members.items():
        assert world.other_subject_id.encode() not in data, name
        assert world.deleted_subject_id.encode() not in data, name
    stack_secrets = [world.owner.metadata[0][1], world.foreign.metadata[0][1]]
    assert not any(secret.encode() in data for secret in stack_secrets for data in members.values())


async def test_cli_export(world: World, stack: EmbeddedStack, tmp_path) -> None:
    key_file = tmp_path / "owner.key"
    key_file.write_text(world.owner.metadata[0][1])

    async def export(subject_id: str, out: Path) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "services.cli.main", "subjects", "export", subject_id, "--out", str(out),
            "--endpoint", stack.public_endpoint, "--api-key-file", str(key_file), "--json",
        ], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    out = tmp_path / "exports" / "export.tar"  # a folder that does not exist yet
    result = await export(world.subject_id, out)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert "manifest.json" in output["files"] and output["bytes"] == out.stat().st_size
    assert out.stat().st_mode & 0o777 == 0o600  # the customer's photos, in clear
    refused = await export("subj_missing", tmp_path / "missing.tar")
    assert refused.returncode == 1 and "NOT_FOUND" in json.loads(refused.stdout)["error"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["exports", "owner.key"]  # nothing half-written
    assert (await export(world.subject_id, out.parent)).returncode == 1


def owner_cli(world: World, stack: EmbeddedStack, key_file: Path):
    key_file.write_text(world.owner.metadata[0][1])

    async def studio(*args: str) -> str:
        result = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "services.cli.main", *args, "--endpoint", stack.public_endpoint,
            "--api-key-file", str(key_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return studio


async def test_cli_order_details_say_where_it_went_and_what_it_delivered(world: World, stack: EmbeddedStack,
                                                                        tmp_path) -> None:
    shown = await owner_cli(world, stack, tmp_path / "owner.key")("orders", "get", world.order_id)
    lines = shown.splitlines()
    assert lines[0] == f"{world.order_id}: ORDER_STATE_DONE, 1 of 1 portraits", shown
    assert any("training step" in line and "loss" in line for line in lines), shown
    assert any(world.portrait_id in line and f"{STYLE[0]}  seed " in line for line in lines), shown


async def test_cli_listings_say_when_nothing_matches(world: World, stack: EmbeddedStack, tmp_path) -> None:
    studio = owner_cli(world, stack, tmp_path / "owner.key")
    assert world.subject_id in await studio("subjects", "list", "--external-ref", "owner-customer")
    assert await studio("subjects", "list", "--external-ref", "nobody") == "no subjects with external ref 'nobody'\n"
    assert world.order_id in await studio("orders", "list", "--subject", world.subject_id)
    assert await studio("orders", "list", "--subject", world.other_subject_id) == "no orders matching the filters\n"
