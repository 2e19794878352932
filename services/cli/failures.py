"""How a `studio` command ends on an error a user can mend: one line, `error: ...` on stderr, or
{"ok": false, "error": ...} on stdout with --json, and exit status 1; no traceback. An error no command expected
ends the same way, as its type and message (fail_unexpected)."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import grpc

DEBUG_ENV = "STUDIO_DEBUG"  # =1: an unexpected error's traceback too
MAX_MESSAGE_CHARS = 500
URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s@]*@")  # s3://ACCESS:SECRET@host: before the @
_SECRETS: set[str] = set()  # what read_secret_line read: API keys, operator tokens


def fail(message: str, as_json: bool, **extra) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message, **extra}))
    else:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def rpc_error_message(error: grpc.RpcError) -> str:
    """'NOT_FOUND: subject 's1' not found': the status and the server's reason."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name}: {details}"


def os_error_message(error: OSError) -> str:
    """'/proc/x: No such file or directory': the path(s) and the system's reason, without a traceback."""
    paths = " -> ".join(str(path) for path in (error.filename, error.filename2) if path is not None)
    reason = error.strerror or str(error)
    return f"{paths}: {reason}" if paths else reason


def read_api_key(path: Path, as_json: bool) -> str:
    if not path.is_file():
        fail(f"no API key file at {path} (give --api-key-file, or start a stack with `studio up`)", as_json)
    return read_secret_line(path, "API key", as_json)


def read_secret_line(path: Path, what: str, as_json: bool) -> str:
    """The one-line secret (WHAT: "API key", "operator token") in PATH, kept out of every error message after.
    A file that holds none, or more than one line, is refused naming the file, never showing what it holds."""
    try:
        value = path.read_text().strip()
    except UnicodeDecodeError:
        fail(f"{path} holds no {what}: it is not text", as_json)
    if not value:
        fail(f"{path} holds no {what}: it is empty", as_json)
    if any(character.isspace() or not character.isprintable() for character in value):
        fail(f"{path} holds no {what}: it must be one line without spaces", as_json)
    return keep_out_of_messages(value)


def keep_out_of_messages(secret: str) -> str:
    """SECRET, remembered so that no unexpected error's message shows it (unexpected_message)."""
    _SECRETS.add(secret)
    return secret


def fail_unexpected(error: Exception, as_json: bool) -> NoReturn:
    """An error no command expected (a bug, or a case not yet named): 'TypeName: message' in one line, as fail()
    reports; the traceback too, on stderr, with STUDIO_DEBUG=1. Neither shows a secret the CLI read."""
    if os.environ.get(DEBUG_ENV) == "1":
        print(_without_secrets("".join(traceback.format_exception(error))), file=sys.stderr, end="")
    fail(unexpected_message(error), as_json)


def unexpected_message(error: BaseException) -> str:
    """'JSONDecodeError: Expecting value: line 1 column 1 (char 0)': one line, without the secrets the CLI read or
    a URL's credentials; cut short if long."""
    text = " ".join(_without_secrets(str(error)).split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _without_secrets(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return URL_CREDENTIALS.sub(r"\1***@", text)


def read_ca_certificate(path: Path, as_json: bool) -> bytes:
    """The --ca file: PEM certificates, read before any call (gRPC would only fail the handshake, over and over)."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        fail(f"--ca: {os_error_message(error)}", as_json)
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        fail(f"--ca: {path} holds no PEM certificate (the CA certificate that signed the public endpoint's)", as_json)
    return pem
