"""Tenants through the operator's CLI and API: keys stored hashed, rotated and disabled keys refused,
mTLS client certificates mapped to tenants, quotas refused at exactly one past the limit, listings."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from studio.v1 import common_pb2

from services.cli.stack import REPO_ROOT, EmbeddedStack, grpc_healthy
from services.common import topology
from services.common.bus import Bus
from services.ingest.public_tls import CERT_ENV, KEY_ENV, TLS_ENV
from studio_client import NO_RETRIES, AdminClient, ClientTls
from tests.fixtures_tenants import (  # noqa: F401  (fixtures)
    HEADSHOT,
    REFERENCE,
    STYLE,
    Tenants,
    admin,
    lisa_headshot,
    lisa_references,
    tenants,
)
from tests.public_tls import PublicTlsIngest, start_public_tls_ingest, start_tls_ingest

pytestmark = pytest.mark.asyncio(loop_scope="session")


def studio_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


async def tenant_cli(stack: EmbeddedStack, *args: str) -> dict:
    result = await asyncio.to_thread(studio_cli, "tenants", *args, "--data", str(stack.data_dir), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


async def expect_code(code: grpc.StatusCode, call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value.details() or ""


async def test_tenant_lifecycle_through_the_cli(stack: EmbeddedStack, tenants: Tenants) -> None:  # noqa: F811
    created = await tenant_cli(stack, "create", "Lifecycle Photo", "--max-subjects-per-day", "7",
                               "--max-photo-age-days", "500")
    key, tenant_id = created["api_key"], created["tenant"]["tenant_id"]
    assert created["tenant"]["quotas"]["max_subjects_per_day"] == 7
    assert created["tenant"]["max_photo_age_days"] == 500
    shown = await asyncio.to_thread(studio_cli, "tenants", "list", "--data", str(stack.data_dir))
    assert "max_photo_age_days 500" in shown.stdout, shown.stdout + shown.stderr
    negative = await asyncio.to_thread(studio_cli, "tenants", "set", tenant_id, "--max-concurrent-orders", "-3",
                                       "--data", str(stack.data_dir))
    refusal = "--max-concurrent-orders: must be at least 0, got -3 (0 means the studio's default)"
    assert negative.returncode == 2 and refusal in negative.stderr, negative.stderr
    first = tenants.client(key)
    await first.create_subject()

    listed = await tenant_cli(stack, "list")
    assert tenant_id in {tenant["tenant_id"] for tenant in listed["tenants"]}
    assert key not in json.dumps(listed) and "hash" not in json.dumps(listed)
    bus = await Bus.connect(stack.nats.url, name="test")
    try:  # only the key's hash is stored, anywhere
        for bucket in (topology.TENANTS_BUCKET, topology.TENANT_ACCOUNTS_BUCKET):
            for stored_key in await bus.kv_keys(bucket):
                assert key.encode() not in (await bus.kv_raw(bucket, stored_key) or b"")
    finally:
        await bus.close()

    rotated = await tenant_cli(stack, "rotate-key", "Lifecycle Photo")
    assert rotated["api_key"] != key
    await expect_code(grpc.StatusCode.UNAUTHENTICATED, first.create_subject())
    second = tenants.client(rotated["api_key"])
    await second.create_subject()

    assert (await tenant_cli(stack, "disable", tenant_id))["tenant"]["disabled"]
    details = await expect_code(grpc.StatusCode.UNAUTHENTICATED, second.list_subjects())
    assert "disabled" in details
    await tenant_cli(stack, "enable", tenant_id)
    assert len((await second.list_subjects()).subjects) == 2

    # Provenance settings (issue 9): the visible label and the OLD_PHOTO age limit.
    labelled = (await tenant_cli(stack, "set", tenant_id, "--visible-label", "AI portrait", "--label-corner",
                                 "top-left", "--max-photo-age-days", "400"))["tenant"]
    assert labelled["visible_label"] == {"enabled": True, "text": "AI portrait", "corner": "LABEL_CORNER_TOP_LEFT"}
    assert labelled["max_photo_age_days"] == 400
    unlabelled = (await tenant_cli(stack, "set", tenant_id, "--no-visible-label"))["tenant"]
    assert not unlabelled["visible_label"]["enabled"] and unlabelled["max_photo_age_days"] == 400


async def test_tenant_admin_needs_the_operator(stack: EmbeddedStack) -> None:
    for token in ("not-the-operator", stack.paths.api_key_file.read_text().strip()):
        intruder = AdminClient(stack.public_endpoint, token)
        try:
            await expect_code(grpc.StatusCode.PERMISSION_DENIED, intruder.create("sneaky"))
            await expect_code(grpc.StatusCode.PERMISSION_DENIED, intruder.list())
        finally:
            await intruder.close()
    result = await asyncio.to_thread(studio_cli, "tenants", "list", "--data", str(stack.data_dir),
                                     "--token-file", str(stack.paths.api_key_file), "--json")
    assert result.returncode == 1 and "PERMISSION_DENIED" in result.stdout


async def test_settings_are_validated(admin: AdminClient) -> None:  # noqa: F811
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.create(""))
    created = await admin.create("settings-check")
    await expect_code(grpc.StatusCode.ALREADY_EXISTS, admin.create("settings-check"))
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(created.tenant.tenant_id,
                                                                    default_retention_days=5000))
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(created.tenant.tenant_id,
                                                                    max_photo_age_days=40000))
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(
        created.tenant.tenant_id, visible_label=common_pb2.VisibleLabel(enabled=True, text="x" * 65)))
    await expect_code(grpc.StatusCode.NOT_FOUND, admin.update("tenant_missing", max_subjects_per_day=1))
    tenant = await admin.update(created.tenant.tenant_id, max_subjects_per_day=3, default_retention_days=14)
    assert tenant.quotas.max_subjects_per_day == 3 and tenant.default_retention_days == 14
    assert tenant.quotas.max_concurrent_orders == 20  # the default, shown

    # A tenant needing more accepted photos than it may upload could never order: refused, nothing written.
    details = await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(
        created.tenant.tenant_id, max_photos_per_subject=4, min_accepted_photos=5))
    assert "min_accepted_photos 5 is more than max_photos_per_subject 4" in details
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(created.tenant.tenant_id,
                                                                    min_accepted_photos=61))  # default max: 60
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.create("never-orders", min_accepted_photos=70))
    assert "never-orders" not in {tenant.name for tenant in await admin.list()}
    unchanged = next(t for t in await admin.list() if t.tenant_id == created.tenant.tenant_id)
    assert unchanged.min_accepted_photos == 0 and unchanged.quotas.max_photos_per_subject == 60
    exact = await admin.create("exact-photos", min_accepted_photos=5, max_photos_per_subject=5,
                               max_photo_age_days=400)
    assert exact.tenant.max_photo_age_days == 400 and exact.tenant.quotas.max_photos_per_subject == 5


async def test_quota_edges(stack: EmbeddedStack, tenants: Tenants, admin: AdminClient) -> None:  # noqa: F811
    headshot, reference, third = lisa_headshot(), *lisa_references()[:2]
    two_photos = headshot.stat().st_size + reference.stat().st_size
    tenant_id, client = await tenants.new(
        max_subjects_per_day=2, max_photos_per_subject=2, max_concurrent_orders=1, max_upload_bytes_per_day=two_photos,
    )
    first = await client.create_subject(idempotency_key="q-1")
    second = await client.create_subject()
    details = await expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, client.create_subject(idempotency_key="q-3"))
    assert "max_subjects_per_day" in details
    assert (await client.create_subject(idempotency_key="q-1")).subject_id == first.subject_id  # a repeat is no new one
    assert len((await client.list_subjects()).subjects) == 2

    await client.upload(first.subject_id, [(headshot, HEADSHOT), (reference, REFERENCE)])  # both limits, exactly
    before = blobs(stack, tenant_id)
    details = await expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, client.upload(first.subject_id,
                                                                                    [(third, REFERENCE)]))
    assert "max_photos_per_subject" in details
    details = await expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, client.upload(second.subject_id,
                                                                                    [(third, REFERENCE)]))
    assert "max_upload_bytes_per_day" in details
    assert blobs(stack, tenant_id) == before and len((await client.get_subject(first.subject_id)).photos) == 2
    await admin.update(tenant_id, max_upload_bytes_per_day=two_photos + third.stat().st_size)
    await client.upload(second.subject_id, [(third, REFERENCE)])

    running = await client.create_order(first.subject_id, STYLE, 1)
    details = await expect_code(grpc.StatusCode.RESOURCE_EXHAUSTED, client.create_order(first.subject_id, STYLE, 1))
    assert "max_concurrent_orders" in details
    assert [order.order_id for order in (await client.list_orders()).orders] == [running.order_id]
    await client.cancel_order(running.order_id)
    await wait_finished(client, running.order_id)
    again = await client.create_order(first.subject_id, STYLE, 1)
    await client.cancel_order(again.order_id)


def blobs(stack: EmbeddedStack, tenant_id: str) -> set[str]:
    return {str(path) for path in (stack.data_dir / "blobs").rglob("*") if tenant_id in str(path) and path.is_file()}


async def wait_finished(client, order_id: str) -> None:
    for _ in range(200):
        order = await client.get_order(order_id)
        if order.state in (common_pb2.ORDER_STATE_DONE, common_pb2.ORDER_STATE_FAILED):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} did not finish")


async def test_concurrent_admin_calls_keep_each_others_changes(
    tenants: Tenants, admin: AdminClient  # noqa: F811
) -> None:
    tenant_id, first = await tenants.new()
    for limit in range(1, 6):  # a rotation, a settings update and an enable, all at once
        rotated, _, _ = await asyncio.gather(
            admin.rotate_key(tenant_id), admin.update(tenant_id, max_subjects_per_day=limit),
            admin.disable(tenant_id, enable=True))
        [account] = [tenant for tenant in await admin.list() if tenant.tenant_id == tenant_id]
        assert (account.quotas.max_subjects_per_day, account.disabled) == (limit, False)
        await tenants.client(rotated.api_key, retry=NO_RETRIES).list_subjects()  # no update wrote back an old key
    await expect_code(grpc.StatusCode.UNAUTHENTICATED, first.list_subjects())

    name = f"twin-{tenant_id}"
    created = await asyncio.gather(*(admin.create(name) for _ in range(4)), return_exceptions=True)
    refused = [c for c in created if isinstance(c, grpc.aio.AioRpcError)]
    assert len(created) - len(refused) == 1, created
    exists = (grpc.StatusCode.ALREADY_EXISTS, f"a tenant named {name!r} exists")
    assert {(c.code(), c.details()) for c in refused} == {exists}
    assert [t.name for t in await admin.list()].count(name) == 1


async def test_listing_pages_and_filters(tenants: Tenants) -> None:  # noqa: F811
    _, client = await tenants.new()
    made = []
    for index in range(5):
        made.append(await client.create_subject(external_ref=f"ref-{index % 2}"))
        await asyncio.sleep(0.002)  # distinct creation milliseconds
    pages, token = [], ""
    while True:
        page = await client.list_subjects(page_size=2, page_token=token)
        pages.append([subject.subject_id for subject in page.subjects])
        token = page.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [s for page in pages for s in page] == [subject.subject_id for subject in reversed(made)]
    assert {s.subject_id for s in (await client.list_subjects(external_ref="ref-1")).subjects} == {
        made[1].subject_id, made[3].subject_id}
    cutoff = made[2].created_at.ToMilliseconds() / 1000
    after = await client.list_subjects(created_after=cutoff)
    assert [s.subject_id for s in after.subjects] == [made[4].subject_id, made[3].subject_id]
    before = await client.list_subjects(created_before=cutoff)
    assert [s.subject_id for s in before.subjects] == [made[1].subject_id, made[0].subject_id]
    await expect_code(grpc.StatusCode.INVALID_ARGUMENT, client.list_subjects(page_token="bm90LW1pbmU="))
    for swapped in (client.list_subjects(created_after=cutoff + 1, created_before=cutoff),
                    client.list_orders(created_after=cutoff, created_before=cutoff)):
        details = await expect_code(grpc.StatusCode.INVALID_ARGUMENT, swapped)
        assert details == "created_after must be earlier than created_before"
    assert len((await client.list_subjects(created_after=cutoff - 60, created_before=cutoff + 60)).subjects) == 5
    assert list((await client.list_orders(states=[common_pb2.ORDER_STATE_DONE])).orders) == []


async def test_a_client_certificate_authenticates_as_its_tenant(
    stack: EmbeddedStack, tenants: Tenants, admin: AdminClient, tmp_path  # noqa: F811
) -> None:
    tenant_id, by_key = await tenants.new(cert_identities=["lab-printer-01"])
    subject = await by_key.create_subject()
    async with start_tls_ingest(stack, tmp_path, ["lab-printer-01", "stranger"]) as tls:
        printer = tenants.client("", tls.endpoint, tls=tls.client("lab-printer-01"))
        assert (await printer.get_subject(subject.subject_id)).subject_id == subject.subject_id
        stranger = tenants.client("", tls.endpoint, tls=tls.client("stranger"))
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, stranger.get_subject(subject.subject_id))
        no_certificate = tenants.client(by_key.metadata[0][1], tls.endpoint, tls=tls.client(None), retry=NO_RETRIES)
        await expect_code(grpc.StatusCode.UNAVAILABLE, no_certificate.get_subject(subject.subject_id))
        await admin.disable(tenant_id)
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, printer.get_subject(subject.subject_id))
        await admin.disable(tenant_id, enable=True)
        await admin.update(tenant_id, remove_cert_identities=["lab-printer-01"])
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, printer.get_subject(subject.subject_id))


async def test_the_public_port_serves_tls_to_api_key_clients(
    stack: EmbeddedStack, tenants: Tenants, tmp_path: Path  # noqa: F811
) -> None:
    tenant_id, by_key = await tenants.new()
    api_key = by_key.metadata[0][1]
    async with start_public_tls_ingest(stack, tmp_path) as public:
        assert await grpc_healthy(public.health_endpoint)  # kubelet's probe: plaintext, health only
        client = tenants.client(api_key, public.endpoint, tls=public.client_tls())
        subject = await client.create_subject()
        assert (await client.get_subject(subject.subject_id)).subject_id == subject.subject_id
        wrong_key = tenants.client("not-a-key", public.endpoint, tls=public.client_tls())
        await expect_code(grpc.StatusCode.UNAUTHENTICATED, wrong_key.get_subject(subject.subject_id))
        plaintext = tenants.client(api_key, public.endpoint, retry=NO_RETRIES)
        await expect_code(grpc.StatusCode.UNAVAILABLE, plaintext.get_subject(subject.subject_id))
        health_port = tenants.client(api_key, public.health_endpoint, retry=NO_RETRIES)
        await expect_code(grpc.StatusCode.UNIMPLEMENTED, health_port.get_subject(subject.subject_id))
        await _cli_over_public_tls(stack, public, tmp_path, api_key, tenant_id, subject.subject_id)

        renewed_ca = public.renew()  # served from the next connection on, without a restart
        renewed = tenants.client(api_key, public.endpoint, tls=ClientTls(renewed_ca.read_bytes()), retry=NO_RETRIES)
        assert await renewed.list_styles()
        expired = tenants.client(api_key, public.endpoint, tls=public.client_tls(), retry=NO_RETRIES)
        await expect_code(grpc.StatusCode.UNAVAILABLE, expired.list_styles())


async def _cli_over_public_tls(stack: EmbeddedStack, public: PublicTlsIngest, tmp_path: Path, api_key: str,
                               tenant_id: str, subject_id: str) -> None:
    key_file = tmp_path / "tenant.key"
    key_file.write_text(api_key)
    tenant = ["--endpoint", public.endpoint, "--api-key-file", str(key_file)]
    trusting = ["--ca", str(public.ca_file)]
    styles = await asyncio.to_thread(studio_cli, "styles", "list", *tenant, *trusting, "--json")
    assert styles.returncode == 0 and json.loads(styles.stdout)["source"] == f"stack at {public.endpoint}", styles
    got = await asyncio.to_thread(studio_cli, "subjects", "get", subject_id, *tenant, *trusting, "--json")
    assert got.returncode == 0 and subject_id in got.stdout, got.stdout + got.stderr
    listed = await asyncio.to_thread(studio_cli, "tenants", "list", "--endpoint", public.endpoint, "--data",
                                     str(stack.data_dir), *trusting, "--json")
    assert listed.returncode == 0 and tenant_id in listed.stdout, listed.stdout + listed.stderr
    deleted = await asyncio.to_thread(studio_cli, "subjects", "delete", subject_id, *tenant, *trusting, "--json")
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["subject_id"] == subject_id, deleted.stderr
    missing = tmp_path / "absent-ca.crt"
    refused = await asyncio.to_thread(studio_cli, "subjects", "get", subject_id, *tenant, "--ca", str(missing))
    assert (refused.returncode, refused.stdout) == (1, ""), refused
    assert refused.stderr == f"error: --ca: {missing}: No such file or directory\n"


@pytest.mark.parametrize(("settings", "named"), [
    ({TLS_ENV: "on"}, f"{TLS_ENV}=on needs {CERT_ENV} and {KEY_ENV}"),
    ({TLS_ENV: "on", CERT_ENV: "/etc/hostname"}, f"{TLS_ENV}=on needs {KEY_ENV} (each"),
    ({TLS_ENV: "yes"}, f"{TLS_ENV} must be 'on' or 'off', not 'yes'"),
])
async def test_ingest_refuses_to_start_with_public_tls_half_configured(settings: dict, named: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("STUDIO_PUBLIC_")}
    ended = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.ingest"], cwd=REPO_ROOT,
                                    env={**env, **settings}, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 1 and named in ended.stderr.splitlines()[-1], ended.stderr


async def test_a_certificate_identity_belongs_to_one_tenant(admin: AdminClient) -> None:  # noqa: F811
    owner = (await admin.create("scanner-owner", cert_identities=["shared-scanner"])).tenant
    taken = (grpc.StatusCode.ALREADY_EXISTS, "certificate identity 'shared-scanner' belongs to another tenant")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.create("scanner-thief", cert_identities=["shared-scanner"])
    assert (refused.value.code(), refused.value.details()) == taken
    other = (await admin.create("scanner-other")).tenant
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.update(other.tenant_id, add_cert_identities=["new-desk", "shared-scanner"], max_subjects_per_day=4)
    assert (refused.value.code(), refused.value.details()) == taken
    listed = {tenant.name: tenant for tenant in await admin.list()}
    assert "scanner-thief" not in listed
    unchanged = listed["scanner-other"]
    assert list(unchanged.cert_identities) == [] and unchanged.quotas.max_subjects_per_day != 4
    assert list(listed["scanner-owner"].cert_identities) == ["shared-scanner"]
    # The refused update claimed nothing: its other identity is free, and a failed creation frees its claims too.
    await expect_code(grpc.StatusCode.ALREADY_EXISTS, admin.create("scanner-owner", cert_identities=["orphan-desk"]))
    assert list((await admin.update(other.tenant_id, add_cert_identities=["new-desk", "orphan-desk"]))
                .cert_identities) == ["new-desk", "orphan-desk"]

    # Several tenants asking for one new identity at once: exactly one gets it.
    racers = [(await admin.create(f"racer-{index}")).tenant.tenant_id for index in range(4)]
    updates = await asyncio.gather(*(admin.update(racer, add_cert_identities=["contested"]) for racer in racers),
                                   return_exceptions=True)
    assert [isinstance(update, grpc.aio.AioRpcError) for update in updates].count(False) == 1, updates
    creations = await asyncio.gather(*(admin.create(f"creator-{index}", cert_identities=["contested-2"])
                                       for index in range(4)), return_exceptions=True)
    assert [isinstance(created, grpc.aio.AioRpcError) for created in creations].count(False) == 1, creations
    holders = [t for t in await admin.list() if {"contested", "contested-2"} & set(t.cert_identities)]
    assert sorted(identity for t in holders for identity in t.cert_identities) == ["contested", "contested-2"]

    await admin.update(owner.tenant_id, remove_cert_identities=["shared-scanner"])  # given up: free to claim
    claimed = await admin.update(other.tenant_id, add_cert_identities=["shared-scanner"])
    assert "shared-scanner" in claimed.cert_identities
    for bad in ([" "], ["x" * 257], [f"desk-{index}" for index in range(33)]):
        await expect_code(grpc.StatusCode.INVALID_ARGUMENT, admin.update(owner.tenant_id, add_cert_identities=bad))
