"""The whole path through the public API: lisa's photos in, portraits out, nothing in clear."""

from __future__ import annotations

import io

import psutil
import pytest
from PIL import Image
from studio.v1 import common_pb2

from services.cli.client import StudioClient
from services.cli.stack import EmbeddedStack
from services.common.envelope import header_of
from tests.fixtures_stack import faces

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Long enough that ciphertext will not contain one by chance; a JPEG's 3-byte start is checked at offset 0.
EMBEDDED_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"JFIF\x00", b"Exif\x00", b"IHDR")


def lisa_set() -> list[tuple]:
    photos = faces("lisa")
    headshot = next(p for p in photos if p.name == "lisa_lisa1.jpg")
    return [(headshot, common_pb2.PHOTO_ROLE_HEADSHOT)] + [
        (p, common_pb2.PHOTO_ROLE_REFERENCE) for p in photos if p != headshot
    ]


@pytest.fixture(scope="module")
def finished_order() -> dict:
    return {}


async def test_photos_to_portraits(client: StudioClient, stack: EmbeddedStack, finished_order: dict) -> None:
    subject = await client.create_subject(external_ref="lisa")
    uploaded = await client.upload(subject.subject_id, lisa_set())
    assert [p.verdict.accepted for p in uploaded] == [True] * len(uploaded)
    assert all(p.photo_id and p.size_bytes > 0 for p in uploaded)

    order = await client.create_order(subject.subject_id, ["studio-frontal-soft", "window-light-smile"], 1)
    assert order.state == common_pb2.ORDER_STATE_QUEUED and order.progress_total == 2
    kinds = [response.event.WhichOneof("kind") async for response in client.watch(order.order_id, timeout_s=600)]
    assert kinds[0] == "queued" and kinds[-1] == "done"
    assert "training" in kinds and "trained" in kinds and kinds.count("rendering") == 2

    order = await client.get_order(order.order_id)
    assert order.state == common_pb2.ORDER_STATE_DONE
    assert sorted(p.style for p in order.portraits) == ["studio-frontal-soft", "window-light-smile"]
    for portrait in order.portraits:
        image = Image.open(io.BytesIO(await client.download(order.order_id, portrait.portrait_id)))
        assert image.format == "PNG" and image.size == (portrait.width, portrait.height) == (64, 80)
    finished_order.update(subject_id=subject.subject_id, order_id=order.order_id)


async def test_second_order_reuses_the_subjects_lora(client: StudioClient, finished_order: dict) -> None:
    if not finished_order:
        pytest.skip("needs the first order")
    order = await client.create_order(finished_order["subject_id"], ["three-quarter-rembrandt"], 1)
    kinds = [response.event.WhichOneof("kind") async for response in client.watch(order.order_id, timeout_s=300)]
    assert "training" not in kinds and kinds[-1] == "done"


async def test_object_store_holds_only_ciphertext(stack: EmbeddedStack, finished_order: dict) -> None:
    if not finished_order:
        pytest.skip("needs the first order")
    blobs = [p for p in (stack.data_dir / "blobs").rglob("*") if p.is_file()]
    original_samples = [photo.read_bytes()[4096:4160] for photo, _ in lisa_set()]
    kinds = {p.parent.name for p in blobs}
    assert {"photos", "crops", "loras", "portraits"} <= kinds
    for path in blobs:
        data = path.read_bytes()
        assert header_of(data).key_id, path
        assert not data.startswith(b"\xff\xd8\xff"), path
        assert not any(signature in data for signature in EMBEDDED_SIGNATURES), path
        assert not any(sample in data for sample in original_samples), path


def test_the_stacks_torch_processes_share_the_cores_without_spinning(stack: EmbeddedStack) -> None:
    """Each service, tritonserver and its model's stub wait passively: a spinning OpenMP pool in one starves the
    others of the machine's cores (a training beside a render ran 5x slower)."""
    leaders = [process.pid for process in stack.processes.values()]
    triton = psutil.Process(stack.triton.process.pid)
    stubs = [child for child in triton.children(recursive=True) if "stub" in child.name()]
    assert stubs, "no python backend stub under tritonserver"
    for process in [psutil.Process(pid) for pid in leaders] + [triton, *stubs]:
        assert process.environ().get("OMP_WAIT_POLICY") == "PASSIVE", process.cmdline()[:3]
