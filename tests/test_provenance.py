"""Provenance through the running stack: a rendered portrait carries a C2PA manifest signed by the
vault that `studio provenance verify` accepts against the stack's development root; tampering is
caught; the tenant's visible label appears only when turned on; old customer photos get OLD_PHOTO."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from studio.v1 import common_pb2, studio_pb2

from services.cli.client import StudioClient
from services.cli.stack import DEFAULT_TENANT, OPERATOR, REPO_ROOT, EmbeddedStack
from services.common.provenance import TRAINED_ALGORITHMIC_MEDIA
from services.renderer.provenance_test import with_one_pixel_changed
from studio_client.admin import AdminClient
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")
HEADSHOT = common_pb2.PHOTO_ROLE_HEADSHOT
REFERENCE = common_pb2.PHOTO_ROLE_REFERENCE
LABEL_BOX = (20, 20, 20)  # the label's background colour (services/renderer/visible_label.py)


def verify_cli(path: Path, stack: EmbeddedStack) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "provenance", "verify", str(path), "--json",
         "--data", str(stack.data_dir)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


@asynccontextmanager
async def tenant_settings(stack: EmbeddedStack, **fields):
    """The default tenant's settings changed for the duration, the way an operator changes them
    (`studio tenants set` → TenantAdmin.UpdateTenant); the stack is shared, so they are put back."""
    admin = AdminClient(stack.public_endpoint, stack.paths.token_file(OPERATOR).read_text().strip())
    original = next(tenant for tenant in await admin.list() if tenant.tenant_id == DEFAULT_TENANT)
    await admin.update(DEFAULT_TENANT, **fields)
    try:
        yield
    finally:
        await admin.update(DEFAULT_TENANT, visible_label=original.visible_label,
                           max_photo_age_days=original.max_photo_age_days)
        await admin.close()


async def portrait(client: StudioClient, subject_id: str) -> tuple[str, str, bytes]:
    order = await client.create_order(subject_id, ["studio-frontal-soft"], 1)
    async for response in client.watch(order.order_id, timeout_s=600):
        last = response.event
    assert last.WhichOneof("kind") == "done", last
    portrait_id = last.done.portraits[0].portrait_id
    return order.order_id, portrait_id, await client.download(order.order_id, portrait_id)


@pytest.fixture(scope="module")
def shared() -> dict:
    return {}


async def test_rendered_portrait_verifies(client: StudioClient, stack: EmbeddedStack, shared: dict,
                                          tmp_path: Path) -> None:
    subject = await client.create_subject(external_ref="provenance")
    headshot = next(p for p in faces("lisa") if p.name == "lisa_lisa1.jpg")
    await client.upload(subject.subject_id, [(headshot, HEADSHOT)])
    order_id, _, png = await portrait(client, subject.subject_id)
    shared.update(subject_id=subject.subject_id, png=png)
    path = tmp_path / "portrait.png"
    path.write_bytes(png)
    code, result = verify_cli(path, stack)
    assert (code, result["outcome"]) == (0, "verified"), result
    assert "development root" in result["trust_source"] and result["trust_anchor"].endswith("provenance-root.pem")
    facts = result["assertions"]
    assert facts["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA == result["xmp_digital_source_type"]
    assert facts["style"] == "studio-frontal-soft" and set(facts["training_mining"].values()) == {"notAllowed"}
    reference = facts["order_reference"]
    assert reference.startswith("ord_")
    for secret in (subject.subject_id, order_id, subject.subject_id.split("_")[-1], order_id.split("_")[-1]):
        assert secret not in reference and secret.encode() not in png
    # The vault signed it, and its record of doing so names no subject: a deletion has nothing more to purge.
    with sqlite3.connect(f"file:{stack.data_dir / 'privacy' / 'vault.sqlite3'}?mode=ro", uri=True) as db:
        signings = db.execute(
            "SELECT service, subject_id, outcome FROM audit WHERE action = 'SignProvenance'"
        ).fetchall()
    assert signings and set(signings) == {("renderer", "", "ALLOWED")}


async def test_tampered_portrait_is_not_matching(stack: EmbeddedStack, shared: dict, tmp_path: Path) -> None:
    if not shared:
        pytest.skip("needs the rendered portrait")
    path = tmp_path / "tampered.png"
    path.write_bytes(with_one_pixel_changed(shared["png"]))
    code, result = verify_cli(path, stack)
    assert (code, result["outcome"]) == (1, "not_matching") and "dataHash.mismatch" in result["summary"], result
    plain = io.BytesIO()
    Image.open(io.BytesIO(shared["png"])).save(plain, format="PNG")
    path.write_bytes(plain.getvalue())
    assert verify_cli(path, stack)[1]["outcome"] == "unlabelled"


async def test_visible_label_when_the_tenant_turns_it_on(client: StudioClient, stack: EmbeddedStack,
                                                         shared: dict) -> None:
    if not shared:
        pytest.skip("needs the subject with a trained LoRA")
    label = common_pb2.VisibleLabel(enabled=True, text="AI", corner=common_pb2.LABEL_CORNER_BOTTOM_RIGHT)
    async with tenant_settings(stack, visible_label=label):
        _, _, labelled = await portrait(client, shared["subject_id"])

    def box_share(png: bytes) -> float:
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        corner = pixels[-10:, -12:]
        return float((corner == LABEL_BOX).all(axis=2).mean())

    assert box_share(labelled) > 0.3 and box_share(shared["png"]) < 0.05


async def test_deletion_leaves_no_signed_portrait_and_no_signing_record(
    client: StudioClient, stack: EmbeddedStack, shared: dict
) -> None:
    if not shared:
        pytest.skip("needs the rendered portrait")
    subject_id = shared["subject_id"]
    deletion = await client.wait_for_certificate((await client.delete_subject(subject_id)).deletion_id, timeout_s=90)
    renderer = next(c for c in deletion.confirmations if c.service == "renderer")
    assert renderer.destroyed["portraits"] == 2  # the manifests lived inside them
    assert not [p for p in (stack.data_dir / "blobs").rglob("*") if subject_id in str(p) and p.is_file()]
    with sqlite3.connect(f"file:{stack.data_dir / 'privacy' / 'vault.sqlite3'}?mode=ro", uri=True) as db:
        named = db.execute("SELECT action FROM audit WHERE subject_id = ? AND action LIKE '%Provenance'",
                           (subject_id,)).fetchall()
    assert named == []


def with_exif_date(source: Path, target: Path, date: str | None) -> Path:
    image = Image.open(source)
    exif = Image.Exif()
    if date:
        exif.get_ifd(0x8769)[0x9003] = date
    image.save(target, format="JPEG", quality=95, exif=exif)
    return target


async def test_old_photo_warning(client: StudioClient, tmp_path: Path) -> None:
    lisa = faces("lisa")
    headshot = next(p for p in lisa if p.name == "lisa_lisa1.jpg")
    other = next(p for p in lisa if p.name == "lisa_lisa2.jpg")
    subject = await client.create_subject(external_ref="recency")
    photos = [(with_exif_date(headshot, tmp_path / "undated.jpg", None), HEADSHOT),
              (with_exif_date(other, tmp_path / "2015.jpg", "2015:07:04 10:30:00"), REFERENCE)]
    requests = []
    for path, role in photos:
        requests.append(studio_pb2.UploadPhotosRequest(header=studio_pb2.PhotoHeader(
            subject_id=subject.subject_id, role=role, filename=path.name)))
        requests.append(studio_pb2.UploadPhotosRequest(chunk=path.read_bytes()))
    response = await client.stub.UploadPhotos(iter(requests), metadata=client.metadata, timeout=120)
    undated, old = (p.verdict for p in response.photos)
    assert undated.accepted and "OLD_PHOTO" not in undated.notes and not undated.HasField("captured_at")
    assert old.accepted and "OLD_PHOTO" in old.notes and old.captured_at.ToDatetime().year == 2015
    assert response.set_verdict.old_photos == 1 and response.set_verdict.sufficient
    assert "1 of your 2" in response.set_verdict.old_photos_message


async def test_tenant_decides_how_old_is_too_old(client: StudioClient, stack: EmbeddedStack, tmp_path: Path) -> None:
    headshot = next(p for p in faces("lisa") if p.name == "lisa_lisa1.jpg")
    subject = await client.create_subject(external_ref="recency-tolerant")
    async with tenant_settings(stack, max_photo_age_days=20 * 365):
        [uploaded] = await client.upload(
            subject.subject_id, [(with_exif_date(headshot, tmp_path / "2015.jpg", "2015:07:04 10:30:00"), HEADSHOT)]
        )
    assert uploaded.verdict.accepted and uploaded.verdict.captured_at.ToDatetime().year == 2015
    assert "OLD_PHOTO" not in uploaded.verdict.notes
