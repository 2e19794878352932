"""DATA/stack.json as the operator commands read it: where a running embedded stack listens. A file that is not
such a document (cut off, edited, another program's) is named in one line, not met with a parse error."""

from __future__ import annotations

import json
from pathlib import Path

from services.cli.failures import fail

STACK_FILE = "stack.json"


def stack_file_value(data: Path, as_json: bool, *keys: str) -> str | None:
    """The value at KEYS ("services", "privacy") in DATA/stack.json; None where there is no such file."""
    path = data / STACK_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        fail(f"{path} is not a stack file ({_reason(error)}); remove it if no stack runs there", as_json)
    value = document
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str):
        fail(f"{path} is not a stack file (no {'.'.join(keys)}); remove it if no stack runs there", as_json)
    return value


def _reason(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return "not text"
