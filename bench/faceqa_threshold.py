"""Measure what the face-check thresholds (services/faceqa/thresholds.py) are based on.

On ../shared/faces (or $STUDIO_FACES_DIR): identity true/false accept rates over every London
same-person and different-person pair at a sweep of thresholds; lisa's distances to her headshot
and to her set's consensus; the spread of pose, sharpness, exposure and face size on real photos;
and the same figures on the transformed photos the tests use (blur, dark, bright, re-encode).

Usage: python bench/faceqa_threshold.py [--people N] [--json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from services.common.machine import cpu_model
from services.faceqa.checks import PhotoCheck
from services.faceqa.measures import hash_distance
from services.faceqa.photoset import consensus
from services.faceqa.pool import CheckPool
from services.faceqa.thresholds import DEFAULTS, Thresholds

FACES = Path(os.environ.get("STUDIO_FACES_DIR", Path(__file__).resolve().parents[2] / "shared" / "faces"))
# Measure everything: nothing may be refused for quality while we measure quality.
PERMISSIVE = Thresholds(min_face_px=1, min_sharpness=0, min_face_luminance=0, max_face_luminance=1,
                        max_clipped_highlights=1, max_crushed_shadows=1)
SWEEP = (0.40, 0.45, 0.50, 0.55, 0.60)



def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def transformations(path: Path) -> dict[str, bytes]:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    return {
        "original": path.read_bytes(),
        "blur_r4": jpeg(image.filter(ImageFilter.GaussianBlur(4))),
        "blur_r8": jpeg(image.filter(ImageFilter.GaussianBlur(8))),
        "dark_0.3": jpeg(ImageEnhance.Brightness(image).enhance(0.3)),
        "bright_2.2": jpeg(image.point(lambda value: min(255, int(value * 2.2)))),
        "reencode_q70": jpeg(image, quality=70),
        "resize_0.8": jpeg(image.resize((int(image.width * 0.8), int(image.height * 0.8)))),
    }


def distance(first: PhotoCheck, second: PhotoCheck) -> float:
    return float(np.linalg.norm(np.subtract(first.embedding, second.embedding)))


def spread(checks: list[PhotoCheck]) -> dict[str, list[float]]:
    found = [c for c in checks if c.pose]

    def low_high(values: list[float]) -> list[float]:
        return [round(min(values), 3), round(max(values), 3)] if values else []

    return {
        "faces": len(found), "of": len(checks),
        "face_px": low_high([c.face_box[2] - c.face_box[0] for c in found]),
        "yaw": low_high([c.pose.yaw for c in found]), "roll": low_high([c.pose.roll for c in found]),
        "pitch": low_high([c.pose.pitch for c in found]), "sharpness": low_high([c.sharpness for c in found]),
        "luminance": low_high([c.exposure.luminance for c in found]),
        "highlights": low_high([c.exposure.highlights for c in found]),
        "shadows": low_high([c.exposure.shadows for c in found]),
    }


def identity_rates(people: dict[str, list[PhotoCheck]]) -> dict:
    faces = [(person, check) for person, checks in people.items() for check in checks if check.embedding]
    same, different = [], []
    for (first_person, first), (second_person, second) in itertools.combinations(faces, 2):
        (same if first_person == second_person else different).append(distance(first, second))
    rates = {
        f"{threshold:.2f}": {
            "true_accept": round(sum(d < threshold for d in same) / len(same), 4),
            "false_accept": round(sum(d < threshold for d in different) / len(different), 5),
            "false_accepted_pairs": sum(d < threshold for d in different),
        }
        for threshold in SWEEP
    }
    return {"same_pairs": len(same), "different_pairs": len(different), "same_max": round(max(same), 3),
            "different_min": round(min(different), 3), "rates": rates}


def duplicate_figures(london: dict[str, list[PhotoCheck]], variants: dict[str, dict[str, PhotoCheck]]) -> dict:
    pairs = [checks for checks in london.values() if len(checks) == 2 and all(c.embedding for c in checks)]
    distinct = {
        "embedding_min": round(min(distance(*pair) for pair in pairs), 3),
        "hash_bits_min": min(hash_distance(pair[0].face_hash, pair[1].face_hash) for pair in pairs),
    }
    copies = {}
    for name in ("reencode_q70", "resize_0.8"):
        found = [(v["original"], v[name]) for v in variants.values() if v[name].embedding and v["original"].embedding]
        copies[name] = {
            "embedding_max": round(max(distance(a, b) for a, b in found), 3),
            "hash_bits_max": max(hash_distance(a.face_hash, b.face_hash) for a, b in found),
        }
    return {"neutral_vs_smiling": distinct, "copies": copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=0, help="London people to use (default: all)")
    parser.add_argument("--variants", type=int, default=12, help="London people to transform")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    london_paths = sorted((FACES / "london").glob("*.jpg"))
    ids = sorted({p.name.split("_")[0] for p in london_paths})[: args.people or None]
    london_paths = [p for p in london_paths if p.name.split("_")[0] in ids]
    lisa_paths = sorted((FACES / "lisa").glob("*.jpg"))
    started = time.perf_counter()
    with CheckPool(thresholds=PERMISSIVE) as pool:
        london_checks = pool.check_all([(p.read_bytes(), False) for p in london_paths])
        lisa_checks = pool.check_all([(p.read_bytes(), False) for p in lisa_paths])
        variant_inputs = {p: transformations(p) for p in london_paths[: 2 * args.variants : 2]}
        variants = {
            p: dict(zip(v, pool.check_all([(data, False) for data in v.values()]), strict=True))
            for p, v in variant_inputs.items()
        }
    people: dict[str, list[PhotoCheck]] = {}
    for path, check in zip(london_paths, london_checks, strict=True):
        people.setdefault(path.name.split("_")[0], []).append(check)
    headshot = lisa_checks[[p.name for p in lisa_paths].index("lisa_lisa1.jpg")]
    lisa_embeddings = [np.array(c.embedding) for c in lisa_checks if c.embedding]
    centre = consensus(lisa_embeddings)
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": round(time.perf_counter() - started, 1),
        "identity_london": identity_rates(people),
        "lisa_identity": {
            path.name: {"to_headshot": round(distance(check, headshot), 3),
                        "to_consensus": round(float(np.linalg.norm(np.array(check.embedding) - centre)), 3)}
            for path, check in zip(lisa_paths, lisa_checks, strict=True) if check.embedding
        },
        "london_measures": spread(london_checks),
        "lisa_measures": spread(lisa_checks),
        "lisa_pose": {p.name: vars(c.pose) for p, c in zip(lisa_paths, lisa_checks, strict=True) if c.pose},
        "transformed": {name: spread([v[name] for v in variants.values()]) for name in next(iter(variants.values()))},
        "duplicates": duplicate_figures(people, variants),
        "defaults": {"identity_max_distance": DEFAULTS.identity_max_distance, "min_sharpness": DEFAULTS.min_sharpness},
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
