"""What a checkout must never hold: key material or a stack's state, committed by a run inside the repository."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_KEY_MARK = b"PRIVATE" + b" KEY-----"  # split so this file does not match itself


def _tracked_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in listing.decode().split("\0") if name]


def _is_master_key_file(data: bytes) -> bool:
    try:
        parsed = json.loads(data)
    except ValueError:
        return False
    return isinstance(parsed, dict) and {"current", "keys"} <= parsed.keys()


def test_no_stack_state_or_key_material_is_tracked():
    offending = []
    for name in _tracked_files():
        path = ROOT / name
        if "secrets" in Path(name).parts[:-1]:
            offending.append(f"{name}: inside a secrets/ folder")
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes()
        if PRIVATE_KEY_MARK in data:
            offending.append(f"{name}: holds a PEM private key")
        elif name.endswith(".json") and _is_master_key_file(data):
            offending.append(f"{name}: holds a master key")
    assert not offending, "remove these from git and keep them out (.gitignore):\n" + "\n".join(offending)


def test_the_default_state_and_output_folders_are_ignored():
    for folder in ("data", "portraits"):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"{folder}/x"], cwd=ROOT, timeout=30)
        if ignored.returncode == 128:
            pytest.skip("not a git checkout")
        assert ignored.returncode == 0, f"{folder}/ (a default of the CLI) is not in .gitignore"
