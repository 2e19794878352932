"""Portrait provenance against a real vault over a socket: the renderer's labelling and C2PA signing
(the vault signs), then `studio provenance verify`'s judgement of the result and of altered copies."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from studio.v1 import common_pb2, events_pb2, privacy_pb2_grpc

from services.cli.provenance import NOT_MATCHING, UNLABELLED, UNSUPPORTED, UNTRUSTED, VERIFIED, verify
from services.common.provenance import TRAINED_ALGORITHMIC_MEDIA, TRAINING_MINING_USES, XMP_PNG_KEYWORD
from services.common.provenance_certs import DevChainFiles, write_dev_chain
from services.privacy.provenance_key import ProvenanceKey
from services.privacy.server_test import Running, token, vault  # noqa: F401  (fixture)
from services.renderer.provenance import PortraitProvenance

pytestmark = pytest.mark.asyncio(loop_scope="session")
TENANT, ORDER, SUBJECT = "tenant-a", "order_7f3a9c", "subject_5d1e22"


@dataclass
class RendererVault:
    """The renderer's side of the vault connection: the real stub and the renderer's token."""

    stub: privacy_pb2_grpc.PrivacyStub
    metadata: tuple


@dataclass
class Signed:
    png: bytes
    root: Path
    tmp: Path

    def write(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    found, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset:offset + 4])
        found.append((png[offset + 4:offset + 8], png[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return found


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, data in parts:
        out.append(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))
    return b"".join(out)


def with_one_pixel_changed(png: bytes) -> bytes:
    """The same file, every chunk kept, but one pixel of the image data different."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).copy()
    pixels[3, 5] = 255 - pixels[3, 5]
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    parts, idat_done = [], False
    for kind, data in chunks(png):
        if kind == b"IDAT":
            if not idat_done:
                parts.append((kind, zlib.compress(raw, 9)))
                idat_done = True
            continue
        parts.append((kind, data))
    return assemble(parts)


@pytest_asyncio.fixture(loop_scope="session")
async def signer(vault: Running, tmp_path: Path) -> PortraitProvenance:  # noqa: F811
    files = DevChainFiles(tmp_path / "provenance.key", tmp_path / "chain.pem", tmp_path / "root.pem")
    write_dev_chain(files)
    vault.servicer.provenance = ProvenanceKey.from_files(files.key, files.chain)
    provenance = PortraitProvenance(RendererVault(vault.stub, token("renderer")), base_model_id="tiny-0")
    provenance.root = files.root
    return provenance


def job(label: common_pb2.VisibleLabel | None = None) -> tuple[events_pb2.RenderJob, events_pb2.RenderItem]:
    item = events_pb2.RenderItem(portrait_id="portrait_1", style="studio-frontal-soft")
    render = events_pb2.RenderJob(order_id=ORDER, tenant_id=TENANT, subject_id=SUBJECT, items=[item])
    if label is not None:
        render.visible_label.CopyFrom(label)
    return render, item


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (80, 64, 3), dtype=np.uint8)


@pytest_asyncio.fixture(loop_scope="session")
async def signed(signer: PortraitProvenance, tmp_path: Path) -> Signed:
    return Signed(await signer.portrait_png(noise(), *job()), signer.root, tmp_path)


async def test_signed_portrait_verifies_with_its_assertions(signed: Signed) -> None:
    result = verify(signed.write("portrait.png", signed.png), signed.root, "test root")
    assert result.outcome == VERIFIED, result
    facts = result.assertions
    assert facts["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert facts["style"] == "studio-frontal-soft" and facts["base_model_id"] == "tiny-0"
    assert facts["generator"][0]["name"] == "Portrait Studio" and facts["created"].endswith("Z")
    assert facts["training_mining"] == {use: "notAllowed" for use in TRAINING_MINING_USES}
    assert result.xmp_digital_source_type == TRAINED_ALGORITHMIC_MEDIA


async def test_order_reference_reveals_neither_order_nor_subject(signer: PortraitProvenance, signed: Signed) -> None:
    reference = verify(signed.write("p.png", signed.png), signed.root, "t").assertions["order_reference"]
    assert reference.startswith("ord_") and len(reference) == 36
    for secret in (ORDER, SUBJECT, ORDER.split("_")[1], SUBJECT.split("_")[1], TENANT):
        assert secret not in reference and secret not in signed.png.decode("latin-1")
    again = await signer.portrait_png(noise(1), *job())
    assert verify(signed.write("q.png", again), signed.root, "t").assertions["order_reference"] == reference


async def test_one_changed_pixel_does_not_match(signed: Signed) -> None:
    result = verify(signed.write("tampered.png", with_one_pixel_changed(signed.png)), signed.root, "t")
    assert result.outcome == NOT_MATCHING and "dataHash.mismatch" in result.summary, result


async def test_flipped_byte_inside_the_image_data_does_not_match(signed: Signed) -> None:
    parts = chunks(signed.png)
    index = next(i for i, (kind, _) in enumerate(parts) if kind == b"IDAT")
    data = bytearray(parts[index][1])
    data[len(data) // 2] ^= 0x01
    parts[index] = (b"IDAT", bytes(data))
    assert verify(signed.write("flipped.png", assemble(parts)), signed.root, "t").outcome == NOT_MATCHING


async def test_re_encoded_or_cropped_copy_is_not_matching(signed: Signed) -> None:
    image = Image.open(io.BytesIO(signed.png))
    keep = PngInfo()  # what "keep metadata" tools carry over: the XMP, not the C2PA manifest
    keep.add_itxt(XMP_PNG_KEYWORD, image.info[XMP_PNG_KEYWORD])
    for name, copy in (("re-encoded.png", image), ("cropped.png", image.crop((0, 0, 48, 48)))):
        buffer = io.BytesIO()
        copy.save(buffer, format="PNG", pnginfo=keep, compress_level=9)
        result = verify(signed.write(name, buffer.getvalue()), signed.root, "t")
        assert result.outcome == NOT_MATCHING and "re-encoded" in result.summary, (name, result)


async def test_stripped_manifest_is_unlabelled(signed: Signed) -> None:
    stripped = assemble([(kind, data) for kind, data in chunks(signed.png) if kind not in (b"caBX", b"iTXt")])
    assert any(kind == b"caBX" for kind, _ in chunks(signed.png))
    result = verify(signed.write("stripped.png", stripped), signed.root, "t")
    assert result.outcome == UNLABELLED and not result.assertions
    plain = io.BytesIO()
    Image.open(io.BytesIO(signed.png)).save(plain, format="PNG")  # a plain re-encode drops every label
    assert verify(signed.write("plain.png", plain.getvalue()), signed.root, "t").outcome == UNLABELLED


async def test_another_studios_root_does_not_vouch_for_it(signed: Signed, tmp_path: Path) -> None:
    other = DevChainFiles(tmp_path / "o.key", tmp_path / "o-chain.pem", tmp_path / "o-root.pem")
    write_dev_chain(other, studio_name="Another studio")
    result = verify(signed.write("p.png", signed.png), other.root, "other root")
    assert result.outcome == UNTRUSTED and result.assertions["style"] == "studio-frontal-soft"
    assert verify(signed.write("p2.png", signed.png), None, "none").outcome == UNTRUSTED


async def test_visible_label_only_when_the_tenant_turns_it_on(signer: PortraitProvenance) -> None:
    pixels = noise(2)
    plain = await signer.portrait_png(pixels, *job())
    labelled = await signer.portrait_png(pixels, *job(common_pb2.VisibleLabel(
        enabled=True, text="AI", corner=common_pb2.LABEL_CORNER_TOP_LEFT,
    )))
    decoded = [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in (plain, labelled)]
    assert np.array_equal(decoded[0], pixels)
    changed = np.argwhere((decoded[0] != decoded[1]).any(axis=2))
    assert len(changed) > 20 and changed.max(axis=0).tolist() < [40, 40]  # top-left corner only


async def test_a_file_that_is_no_image_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a portrait")
    assert verify(path, None, "none").outcome == UNSUPPORTED
