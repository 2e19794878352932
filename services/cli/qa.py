"""`studio qa`: the face checks faceqa runs on an upload, in this process, on local files.

Prints one verdict per photo and the set verdict. With --json: one JSON document,
{"photos": [...], "set": {...}}: a verdict per photo (file, accepted, reasons, face box, yaw, roll,
pitch, sharpness, exposure, identity distance...) and the set verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from services.cli.arguments import whole_number
from services.cli.failures import fail

MIN_CROP_SIZE = 8  # as faceqa's service refuses smaller crops


def register(commands: argparse._SubParsersAction) -> None:
    qa = commands.add_parser("qa", help="check photos locally, as an upload would be checked (no servers)")
    qa.add_argument("--headshot", required=True, help="the frontal headshot")
    qa.add_argument("photos", nargs="*", help="reference photos")
    qa.add_argument("--min-accepted-photos", type=whole_number(0, "the default, 10"),
                    help="accepted photos a sufficient set needs (default 10)")
    qa.add_argument("--crop-size", type=whole_number(MIN_CROP_SIZE), default=512, help="training crop side in pixels")
    qa.add_argument("--max-photo-age-days", type=whole_number(0, "3 years"), default=0,
                    help="photos taken longer ago get the OLD_PHOTO note (default 3 years)")
    qa.add_argument("--workers", type=whole_number(1),
                    help="processes (default: one per CPU this process may use, within its cgroup quota)")
    qa.add_argument("--json", action="store_true", help='one JSON document: {"photos": [...], "set": {...}}')
    qa.set_defaults(func=cmd_qa)


def cmd_qa(args) -> None:
    from services.faceqa.photoset import SetPhoto, judge_set
    from services.faceqa.pool import CheckPool
    from services.faceqa.recency import with_recency_note
    from services.faceqa.thresholds import Thresholds
    from services.faceqa.verdicts import photo_dict, set_dict

    files = [Path(args.headshot), *map(Path, args.photos)]
    unreadable = [str(path) for path in files if not path.is_file()]
    if unreadable:
        fail(f"no such file: {', '.join(unreadable)}", args.json)
    thresholds = Thresholds.from_env()
    inputs = [(path.read_bytes(), index == 0) for index, path in enumerate(files)]
    with (
        CheckPool(workers=args.workers, thresholds=thresholds) as pool,
        tqdm(total=len(files), unit="photo", desc="checking", disable=args.json, file=sys.stderr) as bar,
    ):
        checks = pool.check_all(inputs, args.crop_size, on_done=lambda: bar.update(1))
    checks = [with_recency_note(check, args.max_photo_age_days) for check in checks]
    photos = [SetPhoto(str(path), i == 0, check) for i, (path, check) in enumerate(zip(files, checks, strict=True))]
    summary = judge_set([], photos, thresholds, args.min_accepted_photos)
    if args.json:
        print(json.dumps({"photos": [photo_dict(photo.photo_id, photo) for photo in photos], "set": set_dict(summary)}))
        return
    for photo in photos:
        _print_photo(photo_dict(photo.photo_id, photo))
    _print_set(set_dict(summary))


def _print_photo(verdict: dict) -> None:
    mark = "accepted" if verdict["accepted"] else "REJECTED"
    figures = ""
    if verdict["yaw"] is not None:
        figures = (f"  yaw {verdict['yaw']:+.0f}° roll {verdict['roll']:+.0f}° pitch {verdict['pitch']:+.0f}°"
                   f"  sharpness {verdict['sharpness']:.0f}  light {verdict['exposure']['luminance']:.2f}")
    if verdict["identity_distance"] is not None:
        figures += f"  identity {verdict['identity_distance']:.2f}"
    print(f"{mark:9} {verdict['role']:9} {verdict['file']}{figures}")
    codes, messages = verdict["reasons"] + verdict["notes"], verdict["messages"] + verdict["note_messages"]
    for code, message in zip(codes, messages, strict=True):
        print(f"          {code}: {message}")


def _print_set(summary: dict) -> None:
    state = "ready for training" if summary["sufficient"] else "NOT ready for training"
    headshot = "ok" if summary["headshot_accepted"] else "missing"
    print(f"\nset: {summary['accepted_photos']} accepted (need {summary['min_accepted_photos']}, "
          f"{summary['recommended_photos']} recommended), headshot {headshot}: {state}")
    for message in summary["messages"] + [summary["old_photos_message"]] * bool(summary["old_photos"]):
        print(f"  - {message}")
    yaw, light = summary["yaw_range"], summary["luminance_range"]
    print(f"  pose: yaw {yaw[0]:+.0f}°..{yaw[1]:+.0f}°; light: {light[0]:.2f}..{light[1]:.2f}")
    for message in summary["advice_messages"]:
        print(f"  - {message}")
