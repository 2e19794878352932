"""Hard cases made from ../shared/faces by transformation, each asserting the exact reason codes
(in-process: the same check_photo and judge_set the faceqa service runs)."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from services.faceqa import reasons as codes
from services.faceqa.checks import PhotoCheck, check_photo
from services.faceqa.photoset import NO_HEADSHOT, TOO_FEW_PHOTOS, SetPhoto, judge_set
from tests.fixtures_stack import FACES_DIR, faces

REPO_ROOT = Path(__file__).resolve().parents[1]
pillow_heif.register_heif_opener()


def london(name: str) -> Path:
    path = FACES_DIR / "london" / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"no London photos in {FACES_DIR}")
    return path


@functools.cache
def rgb(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def encoded(image: Image.Image, image_format: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


@functools.cache
def checked(data: bytes, headshot: bool = False) -> PhotoCheck:
    return check_photo(data, crop_size=128, headshot=headshot)


def assert_codes(result: PhotoCheck, *expected: str) -> None:
    assert result.reasons == expected, result
    assert result.accepted == (not expected)
    assert result.messages == tuple(codes.REASON_MESSAGES[code] for code in expected)


def test_real_photo_is_accepted_with_its_measurements() -> None:
    result = checked(london("001_neutral").read_bytes(), headshot=True)
    assert_codes(result)
    assert result.background_faces == 0 and result.notes == ()
    assert abs(result.pose.yaw) < 20 and abs(result.pose.roll) < 15
    assert result.sharpness > 25 and 0.2 < result.exposure.luminance < 0.78
    assert len(result.embedding) == 128 and result.face_hash is not None
    with Image.open(io.BytesIO(result.crop_png)) as crop:
        assert crop.size == (128, 128)


@pytest.mark.parametrize(
    "transform, expected",
    [
        (lambda image: image.filter(ImageFilter.GaussianBlur(4)), codes.BLURRY),
        (lambda image: ImageEnhance.Brightness(image).enhance(0.25), codes.UNDEREXPOSED),
        (lambda image: image.point(lambda value: min(255, int(value * 2.4))), codes.OVEREXPOSED),
        (lambda image: image.resize((300, 300), Image.Resampling.LANCZOS), codes.FACE_TOO_SMALL),
        (lambda image: image.transpose(Image.Transpose.ROTATE_90), codes.NO_FACE),
    ],
    ids=["blur", "dark", "overexposed", "downscaled", "sideways-without-exif"],
)
def test_transformed_photo_gets_exactly_its_code(transform, expected: str) -> None:
    result = checked(encoded(transform(rgb(london("001_neutral"))), quality=92))
    assert_codes(result, expected)


def test_two_people_side_by_side_are_multiple_faces() -> None:
    side = 600
    composite = Image.new("RGB", (2 * side, side))
    for index, name in enumerate(("001_neutral", "002_neutral")):
        composite.paste(rgb(london(name)).resize((side, side)), (index * side, 0))
    assert_codes(checked(encoded(composite)), codes.MULTIPLE_FACES)


def test_small_face_in_the_background_is_accepted_and_said() -> None:
    composite = rgb(london("001_neutral")).copy()
    # Another person's face (tightly cropped) in the top-left corner, clear of the main face.
    passer_by = rgb(london("002_neutral")).crop((380, 380, 980, 980)).resize((260, 260))
    composite.paste(passer_by, (0, 0))
    result = checked(encoded(composite))
    assert_codes(result)
    assert result.background_faces == 1 and result.notes == (codes.BACKGROUND_FACES,)
    alone = checked(london("001_neutral").read_bytes())
    assert result.face_box == alone.face_box


def test_tilted_headshot_is_not_frontal_but_fine_as_a_reference() -> None:
    tilted = next(path for path in faces("lisa") if path.name == "lisa_lisa3.jpg").read_bytes()
    assert_codes(checked(tilted, headshot=True), codes.NOT_FRONTAL)
    assert_codes(checked(tilted, headshot=False))


@pytest.mark.parametrize("orientation", [6, 8])
def test_sideways_photo_with_exif_orientation_is_accepted(orientation: int) -> None:
    stored_turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    exif = Image.Exif()
    exif[0x0112] = orientation
    original = london("001_neutral")
    result = checked(encoded(rgb(original).transpose(stored_turn), exif=exif.tobytes(), quality=92), headshot=True)
    assert_codes(result)
    assert abs(result.pose.roll) < 15


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "HEIF"])
def test_png_webp_and_heic_are_accepted(image_format: str) -> None:
    small = rgb(london("003_neutral")).resize((675, 675))
    assert_codes(checked(encoded(small, image_format)))


def test_truncated_photo_is_unreadable() -> None:
    data = london("001_neutral").read_bytes()
    assert_codes(checked(data[: len(data) // 3]), codes.UNREADABLE)


def test_other_formats_are_unsupported() -> None:
    assert_codes(checked(encoded(Image.new("RGB", (64, 64)), "GIF")), codes.UNSUPPORTED_FORMAT)


def test_decompression_bomb_is_refused_fast_with_little_memory() -> None:
    """A 20,000×20,000 JPEG and PNG (1.2 GB of pixels) are refused from their headers."""
    script = """
import io, resource, time
from PIL import Image
from services.faceqa.checks import check_photo
from services.faceqa.decode import decode_upright
def header_only(image_format):
    data = io.BytesIO(); Image.new("RGB", (1, 1)).save(data, image_format); data = bytearray(data.getvalue())
    if image_format == "PNG":
        import struct, zlib
        data[16:24] = struct.pack(">II", 20000, 20000); data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    else:
        index = data.index(b"\\xff\\xc0"); data[index + 5:index + 9] = (20000).to_bytes(2, "big") * 2
    return bytes(data)
bombs = [header_only("PNG"), header_only("JPEG")]
decode_upright(bombs[0])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
results = [check_photo(bomb) for bomb in bombs]
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,
      *[r.reasons[0] for r in results])
"""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    seconds, grown_kib, *reasons = run.stdout.split()
    assert reasons == [codes.TOO_LARGE, codes.TOO_LARGE]
    assert float(seconds) < 0.5 and int(grown_kib) < 20 * 1024


def judged(headshot: bytes, *references: bytes, minimum: int | None = None):
    photos = [SetPhoto("headshot", True, checked(headshot, headshot=True))]
    photos += [SetPhoto(f"reference-{index}", False, checked(data)) for index, data in enumerate(references)]
    return photos, judge_set([], photos, min_accepted_photos=minimum)


def test_another_person_as_a_reference_is_an_identity_mismatch() -> None:
    photos, summary = judged(
        london("001_neutral").read_bytes(), london("001_smiling").read_bytes(), london("002_neutral").read_bytes()
    )
    assert [p.check.reasons for p in photos] == [(), (), (codes.IDENTITY_MISMATCH,)]
    assert photos[1].identity_distance < 0.5 < photos[2].identity_distance
    assert summary.accepted_photos == 2 and summary.headshot_accepted


def test_a_reencoded_copy_is_a_duplicate_but_another_expression_is_not() -> None:
    smiling = london("001_smiling")
    copy = encoded(rgb(smiling).resize((1200, 1200)), quality=75)
    photos, summary = judged(london("001_neutral").read_bytes(), smiling.read_bytes(), copy)
    assert [p.check.reasons for p in photos] == [(), (), (codes.DUPLICATE,)]
    assert photos[2].duplicate_of == "reference-0" and photos[2].check.crop_png is None
    assert summary.accepted_photos == 2


def test_set_verdict_counts_and_needs_a_headshot() -> None:
    photos, summary = judged(london("001_neutral").read_bytes(), london("001_smiling").read_bytes(), minimum=3)
    assert not summary.sufficient and summary.problems == (TOO_FEW_PHOTOS,)
    assert summary.min_accepted_photos == 3 and summary.recommended_photos == 20
    blurred = encoded(rgb(london("001_neutral")).filter(ImageFilter.GaussianBlur(4)))
    _, summary = judged(blurred, london("001_smiling").read_bytes(), minimum=1)
    assert summary.problems == (NO_HEADSHOT,) and not summary.headshot_accepted


def test_lisa_set_is_accepted_whole_with_its_headshot() -> None:
    photos = faces("lisa")
    headshot = next(p for p in photos if p.name == "lisa_lisa1.jpg")
    others = [p.read_bytes() for p in photos if p != headshot]
    judged_photos, summary = judged(headshot.read_bytes(), *others, minimum=8)
    assert [p.check.reasons for p in judged_photos] == [()] * 8
    assert summary.sufficient and summary.luminance_range[1] - summary.luminance_range[0] > 0.2


def set_photo(name: str, headshot: bool = False) -> SetPhoto:
    return SetPhoto(name, headshot, checked(london(name).read_bytes(), headshot=headshot))


def test_a_second_headshot_must_match_the_first() -> None:
    earlier = [set_photo("001_neutral", headshot=True)]
    other = set_photo("002_neutral", headshot=True)
    judge_set(earlier, [other])
    assert other.check.reasons == (codes.IDENTITY_MISMATCH,) and other.identity_distance > 0.5
    theirs, mine = set_photo("002_smiling"), set_photo("001_smiling")
    summary = judge_set(earlier, [theirs, mine])
    assert [theirs.check.reasons, mine.check.reasons] == [(codes.IDENTITY_MISMATCH,), ()]
    assert summary.accepted_photos == 2 and summary.headshot_accepted


def test_the_headshot_anchors_identity_when_strangers_outnumber_it() -> None:
    photos = [set_photo("001_neutral", headshot=True), set_photo("002_smiling"), set_photo("002_neutral")]
    summary = judge_set([], photos)
    assert [p.check.reasons for p in photos] == [(), (codes.IDENTITY_MISMATCH,), (codes.IDENTITY_MISMATCH,)]
    assert summary.accepted_photos == 1 and summary.headshot_accepted


def test_references_sent_again_with_the_first_headshot_keep_only_its_person() -> None:
    """What ingest does when the first headshot comes after references: sends them again, as new photos."""
    references = [set_photo("001_smiling"), set_photo("002_smiling")]
    judge_set([], references)
    assert [p.check.accepted for p in references] == [True, True]  # no headshot to match yet
    again = [set_photo("001_neutral", headshot=True), set_photo("001_smiling"), set_photo("002_smiling")]
    summary = judge_set([], again)
    assert [p.check.reasons for p in again] == [(), (), (codes.IDENTITY_MISMATCH,)]
    assert summary.accepted_photos == 2


@pytest.mark.parametrize(
    "box", [(500, 0, 1350, 1350), (0, 0, 850, 1350), (0, 0, 1350, 800)], ids=["left", "right", "chin"]
)
def test_face_cut_off_by_the_edge_is_refused(box: tuple[int, int, int, int]) -> None:
    cut_off = encoded(rgb(london("001_neutral")).crop(box), quality=92)
    assert_codes(checked(cut_off, headshot=True), codes.FACE_CUT_OFF)
    assert_codes(checked(cut_off), codes.FACE_CUT_OFF)


def test_studio_qa_prints_one_json_document(tmp_path: Path) -> None:
    blurred = tmp_path / "blurred.jpg"
    blurred.write_bytes(encoded(rgb(london("001_smiling")).filter(ImageFilter.GaussianBlur(4))))
    run = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "qa", "--json", "--headshot",
         str(london("001_neutral")), str(london("002_neutral")), str(blurred)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
    )
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)  # one document: a script reads it whole
    photos, photo_set = document["photos"], document["set"]
    assert [p["reasons"] for p in photos] == [[], [codes.IDENTITY_MISMATCH], [codes.BLURRY]]
    assert {"file", "accepted", "face_box", "yaw", "roll", "pitch", "sharpness", "exposure",
            "identity_distance"} <= set(photos[0])
    assert photos[1]["identity_distance"] > 0.5 and len(photos[0]["face_box"]) == 4
    assert photo_set["accepted_photos"] == 1 and photo_set["problems"] == [TOO_FEW_PHOTOS]


def test_studio_qa_names_a_missing_file() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "qa", "--headshot", "/nonexistent/photo.jpg"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )
    assert run.returncode != 0 and "/nonexistent/photo.jpg" in run.stderr
