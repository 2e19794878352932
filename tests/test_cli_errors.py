"""`studio` on the failures a user can mend: one line on stderr, or with --json one JSON error object on
stdout; a non-zero exit; never a traceback. No stack runs: every case fails before a call, or talks to a
stand-in vault."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from services.cli import styles
from services.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ended:
    code: int | str | None
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)  # one JSON document, nothing else on stdout


def studio(capsys: pytest.CaptureFixture, *argv: str) -> Ended:
    try:
        main(list(argv))
        code = 0
    except SystemExit as ended:
        code = ended.code
    captured = capsys.readouterr()
    return Ended(code, captured.out, captured.err)


def refused_as_json(ended: Ended, says: str, code: int = 1) -> None:
    assert ended.code == code, ended
    document = ended.json()
    assert document["ok"] is False and says in document["error"], document


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line is parsed, but no command runs (a refusal must come from the parsing)."""
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, *args, **kwargs):
        parsed = parse(self, *args, **kwargs)
        parsed.func = lambda _: print("ran")
        return parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)


# --- 1. `raise SystemExit("why")`: the same one line, or JSON object, as fail() ------------------------

@pytest.mark.parametrize(("argv", "says"), [
    (["capacity", "--arrivals", "0"], "--arrivals must be positive"),
    (["capacity", "--arrivals", "100", "--train-gpus", "3"], "both --train-gpus and --render-gpus"),
    (["qa", "--headshot", "/nonexistent/photo.jpg"], "no such file: /nonexistent/photo.jpg"),
    (["demo", "--photos", "/nonexistent/photos"], "no such folder: /nonexistent/photos"),
    (["provenance", "verify", "/nonexistent/portrait.png"], "no such file: /nonexistent/portrait.png"),
])
def test_an_expected_failure_is_a_json_error_object(capsys, argv: list[str], says: str) -> None:
    refused_as_json(studio(capsys, *argv, "--json"), says)


def test_train_refuses_a_missing_base_model_as_json(capsys, tmp_path: Path) -> None:
    ended = studio(capsys, "train", "--photos", str(tmp_path), "--base-model", str(tmp_path / "absent"),
                   "--out", str(tmp_path / "out"), "--json")
    refused_as_json(ended, str(tmp_path / "absent"))


@pytest.mark.parametrize("as_json", [True, False])
def test_any_system_exit_with_a_message_is_reported_as_fail_reports(capsys, monkeypatch, as_json: bool) -> None:
    async def refused(*_):
        raise SystemExit("ListStyles at 127.0.0.1:1 failed: PERMISSION_DENIED: no")

    monkeypatch.setattr(styles, "styles_from_stack", refused)
    ended = studio(capsys, "styles", "list", *(["--json"] if as_json else []))
    if as_json:
        refused_as_json(ended, "PERMISSION_DENIED: no")
    else:
        assert (ended.code, ended.out) == (1, "")
        assert ended.err == "error: ListStyles at 127.0.0.1:1 failed: PERMISSION_DENIED: no\n"


# --- 2. bad argument values: refused by argparse ----------------------------------------------------

BAD_ARGUMENTS = [
    (["qa", "--headshot", "h.jpg", "--workers", "-2"], "--workers"),
    (["qa", "--headshot", "h.jpg", "--crop-size", "-5"], "--crop-size"),
    (["qa", "--headshot", "h.jpg", "--min-accepted-photos", "-1"], "--min-accepted-photos"),
    (["qa", "--headshot", "h.jpg", "--max-photo-age-days", "-1"], "--max-photo-age-days"),
    (["orders", "list", "--page-size", "-3"], "--page-size"),
    (["subjects", "list", "--page-size", "-1"], "--page-size"),
    (["up", "--port", "70000"], "--port"),
    (["up", "--port", "-1"], "--port"),
    (["up", "--min-accepted-photos", "-2"], "--min-accepted-photos"),
    (["demo", "--photos", "p", "--count", "-1"], "--count"),
    (["demo", "--photos", "p", "--endpoint", "localhost"], "'localhost' is not HOST:PORT"),
    (["demo", "--photos", "p", "--endpoint", "localhost:99999"], "--endpoint"),
    (["capacity", "--arrivals", "nan"], "--arrivals: must be a finite number"),
    (["capacity", "--arrivals", "10", "--target-p95-wait", "nan"], "--target-p95-wait: must be a finite number"),
    (["capacity", "--arrivals", "inf"], "--arrivals: must be a finite number"),
]


@pytest.mark.parametrize(("argv", "says"), BAD_ARGUMENTS)
def test_a_bad_argument_value_is_refused_in_one_line(capsys, nothing_runs, argv: list[str], says: str) -> None:
    ended = studio(capsys, *argv)
    assert ended.code == 2 and says in ended.err.splitlines()[-1] and ended.out == "", ended


@pytest.mark.parametrize(("argv", "says"), [case for case in BAD_ARGUMENTS if case[0][0] != "up"])  # up: no --json
def test_a_bad_argument_value_with_json_is_a_json_error_object(capsys, nothing_runs, argv, says) -> None:
    refused_as_json(studio(capsys, *argv, "--json"), says, code=2)


def test_a_bad_argument_value_ends_without_a_traceback() -> None:
    run = subprocess.run([sys.executable, "-m", "services.cli.main", "qa", "--headshot", "h.jpg", "--workers", "-2",
                          "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert json.loads(run.stdout)["error"] == "studio qa: argument --workers: must be at least 1, got -2"


# --- 3. train: --out is checked before the training ---------------------------------------------------

@pytest.mark.parametrize("under", ["", "sub"])
def test_train_refuses_an_out_that_is_a_file_before_anything_else(capsys, tmp_path: Path, under: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    out = a_file / under if under else a_file
    ended = studio(capsys, "train", "--photos", str(tmp_path), "--base-model", str(tmp_path / "absent"),
                   "--out", str(out), "--json")
    refused_as_json(ended, f"{a_file} is a file, not a folder")


# --- 4. provenance: a trust anchor that is not PEM ------------------------------------------------------

def test_provenance_reports_a_bad_trust_anchor(capsys, tmp_path: Path) -> None:
    portrait, anchor = tmp_path / "portrait.png", tmp_path / "anchor.pem"
    Image.new("RGB", (8, 8)).save(portrait)
    anchor.write_text("not a certificate")
    ended = studio(capsys, "provenance", "verify", str(portrait), "--trust-anchor", str(anchor), "--json")
    refused_as_json(ended, f"bad trust anchor {anchor}")


# --- 5. an operator token file given by name must exist ---------------------------------------------------

@pytest.mark.parametrize("command", [["audit", "export"], ["keys", "rotate"]])
def test_a_missing_token_file_given_by_name_is_refused(capsys, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "operator.token"
    ended = studio(capsys, *command, "--privacy-addr", "127.0.0.1:1", "--token-file", str(missing), "--json")
    refused_as_json(ended, f"no operator token at {missing}")


# --- 6. paths that cannot be written ----------------------------------------------------------------------

def test_an_unwritable_out_is_reported_with_its_path(capsys, tmp_path: Path) -> None:
    key = tmp_path / "tenant.key"
    key.write_text("key")
    ended = studio(capsys, "subjects", "export", "s1", "--out", "/proc/x/y", "--api-key-file", str(key), "--json")
    refused_as_json(ended, "/proc/x: ")


def test_models_tiny_under_a_file_is_reported_with_its_path(capsys, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    ended = studio(capsys, "models", "tiny", "--out", str(a_file / "model"))
    assert ended.code == 1 and ended.err == f"error: {a_file / 'model'}: Not a directory\n", ended


# --- 9. an audit export of the wrong shape ----------------------------------------------------------------

@pytest.mark.parametrize("content", ["[1]\n", '{"type": "entry", "seq": 1}\n"text"\n'])
def test_audit_verify_refuses_json_that_is_not_an_export(capsys, tmp_path: Path, content: str) -> None:
    export, key = tmp_path / "export.jsonl", tmp_path / "vault.pub"
    export.write_text(content)
    key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ended = studio(capsys, "audit", "verify", "--file", str(export), "--public-key", str(key), "--json")
    refused_as_json(ended, f"{export} is not an audit export")
