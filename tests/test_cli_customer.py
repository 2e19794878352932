"""One customer's job step by step through the `studio` command, as an operator's script runs it:
subjects create → upload → orders create --out → download → revoke-consent; and each refusal in one line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from PIL import Image

from services.cli.stack import EmbeddedStack
from tests.fixtures_stack import FACES_DIR, faces
from tests.test_cli import STUDIO

STYLE = "studio-frontal-soft"


class Studio:
    """Runs `studio …` against the session stack as the default tenant."""

    def __init__(self, stack: EmbeddedStack) -> None:
        self.tenant = ["--endpoint", stack.public_endpoint, "--api-key-file", str(stack.paths.api_key_file)]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*STUDIO, *args, *self.tenant], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "STUDIO_FACES_DIR": str(FACES_DIR)})

    def json(self, *args: str) -> dict:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def refused(self, *args: str) -> str:
        """The one line of a refused command (exit 1, no traceback)."""
        done = self.run(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: "), done.stderr[-2000:]
        return lines[-1]


def test_a_customer_from_consent_to_portraits_to_revocation(stack: EmbeddedStack, tmp_path: Path) -> None:
    studio = Studio(stack)
    headshot, *references = faces("lisa")[:3]
    created = studio.json("subjects", "create", "--consent-agreement", "2026-01", "--external-ref", "cli-flow")
    subject = created["subject"]
    subject_id = subject["subject_id"]
    assert subject["consent"]["agreement_version"] == "2026-01" and subject["consent"]["retention_days"] > 0

    uploaded = studio.json("subjects", "upload", subject_id, "--headshot", str(headshot), "--references",
                           *map(str, references))
    assert [p["filename"] for p in uploaded["photos"]] == [headshot.name] + [p.name for p in references]
    assert all(p["verdict"]["accepted"] for p in uploaded["photos"]) and uploaded["set_verdict"]["sufficient"]
    again = studio.json("subjects", "upload", subject_id, "--headshot", str(headshot), "--references",
                           *map(str, references))
    assert again["resumed"] == 3  # the same photos again are recognised, not stored twice
    assert len(studio.json("subjects", "get", subject_id)["subject"]["photos"]) == 3

    ordered = studio.json("orders", "create", subject_id, "--style", STYLE, "--count", "2", "--out",
                          str(tmp_path / "portraits"))
    assert ordered["order"]["state"] == "ORDER_STATE_DONE" and ordered["training"]["best_step"] >= 1
    portraits = ordered["portraits"]
    assert len(portraits) == 2 and {p["style"] for p in portraits} == {STYLE}
    for portrait in portraits:
        path = Path(portrait["file"])
        assert path.stat().st_mode & 0o777 == 0o600  # the customer's face, in clear: owner-only
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (portrait["width"], portrait["height"])
    order_id = ordered["order"]["order_id"]

    again = studio.json("orders", "download", order_id, "--out", str(tmp_path / "again"))
    assert [Path(p["file"]).read_bytes() for p in again["portraits"]] == [Path(p["file"]).read_bytes()
                                                                            for p in portraits]
    assert studio.json("orders", "watch", order_id)["order"]["state"] == "ORDER_STATE_DONE"  # a done order: at once
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert studio.refused("orders", "download", order_id, "--out", str(a_file)) == (
        f"error: --out {a_file} is a file, not a folder")
    assert "FAILED_PRECONDITION: order already finished" in studio.refused("orders", "cancel", order_id)

    revoked = studio.json("subjects", "revoke-consent", subject_id, "--wait", "--out", str(tmp_path / "certs"))
    assert revoked["state"] == "DELETION_STATE_CERTIFIED" and Path(revoked["certificate"]).is_file()
    assert "NOT_FOUND" in studio.refused("subjects", "get", subject_id)
    assert "NOT_FOUND" in studio.refused("orders", "download", order_id, "--out", str(tmp_path / "gone"))
    assert not (tmp_path / "gone").exists()


def test_a_cancelled_order_is_watched_and_downloaded_as_failed(stack: EmbeddedStack, tmp_path: Path) -> None:
    studio = Studio(stack)
    subject_id = studio.json("subjects", "create", "--consent-agreement", "2026-01")["subject"]["subject_id"]
    studio.json("subjects", "upload", subject_id, "--headshot", str(faces("lisa")[0]))
    order_id = studio.json("orders", "create", subject_id, "--style", STYLE)["order"]["order_id"]
    cancelled = studio.json("orders", "cancel", order_id, "--reason", "customer changed their mind")
    assert cancelled["order"]["state"] == "ORDER_STATE_FAILED"
    assert studio.json("orders", "cancel", order_id)["order"]["state"] == "ORDER_STATE_FAILED"  # twice: no error

    assert studio.refused("orders", "watch", order_id) == (
        f"error: order {order_id} failed in cancelled: customer changed their mind")
    watched = studio.run("orders", "watch", order_id, "--json")
    assert watched.returncode == 1 and json.loads(watched.stdout)["stage"] == "cancelled"
    line = studio.refused("orders", "download", order_id, "--out", str(tmp_path / "none"))
    assert line == f"error: order {order_id} is failed, it has no portraits to download: customer changed their mind"
    assert not (tmp_path / "none").exists()


def test_refusals_name_what_is_wrong_and_write_nothing(stack: EmbeddedStack, tmp_path: Path) -> None:
    studio = Studio(stack)
    missing = tmp_path / "absent.jpg"
    assert studio.refused("subjects", "upload", "any-subject", "--headshot", str(missing)) == (
        f"error: no such photo: {missing}")
    assert studio.refused("subjects", "upload", "any-subject") == (
        "error: no photos to upload: give --headshot and/or --references")
    assert "NOT_FOUND" in studio.refused("subjects", "upload", "no-such-subject", "--headshot", str(faces("lisa")[0]))
    no_consent = studio.run("subjects", "create")
    assert no_consent.returncode == 2 and "--consent-agreement" in no_consent.stderr

    subject_id = studio.json("subjects", "create", "--consent-agreement", "2026-01")["subject"]["subject_id"]
    studio.json("subjects", "upload", subject_id, "--headshot", str(faces("lisa")[0]))
    assert "INVALID_ARGUMENT" in studio.refused("orders", "create", subject_id, "--style", "no-such-style")
    zero = studio.run("orders", "create", subject_id, "--style", STYLE, "--count", "0")
    assert zero.returncode == 2 and "--count: must be at least 1, got 0" in zero.stderr
    assert studio.json("orders", "list", "--subject", subject_id)["orders"] == []  # nothing was ordered
