"""`studio` on errors no command names (a corrupt DATA/stack.json, an environment half set, a key file of two lines,
a stack that does not start): the same one line, or with --json one JSON error object, and exit 1; a traceback only
with STUDIO_DEBUG=1; never a secret the CLI read. Run as a user runs them: in a process of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.failures import keep_out_of_messages, unexpected_message
from services.common.launchers.process import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def studio(*argv: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})})


def refused(run: subprocess.CompletedProcess, says: str) -> str:
    """The JSON error object's message, after checking it is all there is."""
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    document = json.loads(run.stdout)
    assert document["ok"] is False and says in document["error"], document
    return document["error"]


@pytest.fixture
def corrupt_data(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "operator.token").write_text("operator-token\n")
    (tmp_path / "stack.json").write_text('{"public_endpoint": "127.0.0.1:')  # cut off mid-write by hand
    return tmp_path


@pytest.mark.parametrize("command", [["tenants", "list"], ["keys", "rotate"], ["audit", "export"]])
def test_a_corrupt_stack_file_is_named_in_one_json_error(corrupt_data: Path, command: list[str]) -> None:
    run = studio(*command, "--data", str(corrupt_data), "--json")
    refused(run, f"{corrupt_data / 'stack.json'} is not a stack file")


def test_a_stack_file_without_the_address_is_named(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text('{"services": {}}')
    refused(studio("keys", "rotate", "--data", str(tmp_path), "--json"), "is not a stack file (no services.privacy)")


def test_an_unexpected_error_is_its_type_and_message(tmp_path: Path) -> None:
    token = tmp_path / "operator.token"
    token.write_text("operator-token")
    argv = ("keys", "rotate", "--privacy-addr", "127.0.0.1:1", "--token-file", str(token))
    half_tls = {"STUDIO_TLS_CERT_FILE": str(tmp_path / "tls.crt")}  # no key, no CA: tls.py refuses
    refused(studio(*argv, "--json", env=half_tls), "RuntimeError: ")
    plain = studio(*argv, env=half_tls)
    assert plain.returncode == 1 and plain.stdout == "", plain
    assert plain.stderr.startswith("error: RuntimeError: ") and plain.stderr.count("\n") == 1, plain.stderr


def test_studio_debug_adds_the_traceback_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "operator.token").write_text("operator-token")
    run = studio("keys", "rotate", "--privacy-addr", "127.0.0.1:1", "--token-file", str(tmp_path / "operator.token"),
                 "--json", env={"STUDIO_TLS_CERT_FILE": str(tmp_path / "tls.crt"), "STUDIO_DEBUG": "1"})
    assert run.returncode == 1 and json.loads(run.stdout)["error"].startswith("RuntimeError: ")
    assert "Traceback (most recent call last)" in run.stderr


def test_an_api_key_file_of_two_lines_is_refused_without_showing_it(tmp_path: Path) -> None:
    key = tmp_path / "tenant.key"
    key.write_text("sk_FIRSTHALF\nSECONDHALF\n")
    run = studio("subjects", "get", "s1", "--api-key-file", str(key), "--endpoint", "127.0.0.1:1", "--json")
    message = refused(run, f"{key} holds no API key")
    assert "FIRSTHALF" not in message + run.stderr and "SECONDHALF" not in message + run.stderr


def test_an_unexpected_message_shows_no_secret_read_and_no_url_credentials() -> None:
    keep_out_of_messages("sk_TOPSECRET")
    error = ValueError("refused sk_TOPSECRET at s3://AK:SECRET/KEY@minio:9000/b\nsecond line")
    message = unexpected_message(error)
    assert message == "ValueError: refused *** at s3://***@minio:9000/b second line"


def test_up_reports_a_stack_that_did_not_start_in_one_line(tmp_path: Path) -> None:
    model = tmp_path / "model"  # never loaded: the first service ends before anything asks for it
    model.mkdir()
    run = studio("up", "--data", str(tmp_path / "data"), "--port", str(free_port()), "--base-model", str(model),
                 env={"STUDIO_TRAIN_STEPS": "many"}, timeout=300)  # every service's settings refuse it
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith("error: the stack did not start: privacy exited before it was ready"), line
    assert f"log {tmp_path / 'data' / 'logs' / 'privacy.log'}" in line and "'many'" in line, line
