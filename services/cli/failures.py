"""How a `studio` command ends on an error a user can mend: one line, `error: ...` on stderr, or
{"ok": false, "error": ...} on stdout with --json, and exit status 1; no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import grpc


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
    return path.read_text().strip()


def read_ca_certificate(path: Path, as_json: bool) -> bytes:
    """The --ca file: PEM certificates, read before any call (gRPC would only fail the handshake, over and over)."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        fail(f"--ca: {os_error_message(error)}", as_json)
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        fail(f"--ca: {path} holds no PEM certificate (the CA certificate that signed the public endpoint's)", as_json)
    return pem
