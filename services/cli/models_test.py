"""`studio models tiny` as a user runs it: with --json, one JSON document on stdout and nothing on stderr; on a
terminal, the CLI's own line counting the seconds, and no library's progress bar."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from services.cli.stack import REPO_ROOT

STUDIO = [sys.executable, "-m", "services.cli.main"]
LIBRARY_BARS = ("Writing model shards", "Loading pipeline components", "it/s]")


def test_models_tiny_with_json_prints_one_document_and_no_bar(tmp_path: Path) -> None:
    run = subprocess.run([*STUDIO, "models", "tiny", "--json", "--out", str(tmp_path / "tiny")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["path"] == str((tmp_path / "tiny").resolve())
    assert run.stderr == ""


def test_models_tiny_on_a_terminal_shows_its_own_progress_line(tmp_path: Path) -> None:
    leader, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # rows, cols: a real terminal's
    try:
        writing = subprocess.Popen([*STUDIO, "models", "tiny", "--out", str(tmp_path / "tiny")], cwd=REPO_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=terminal)
        shown = _read_until_it_ends(leader, writing)
    finally:
        os.close(terminal)
        os.close(leader)
    assert writing.returncode == 0, shown
    assert f"writing the tiny model to {tmp_path / 'tiny'}: 00:0" in shown
    assert not any(bar in shown for bar in LIBRARY_BARS), shown


def _read_until_it_ends(descriptor: int, process: subprocess.Popen, timeout_s: float = 300) -> str:
    """What the process wrote to the terminal, read as it comes (a full terminal would block it)."""
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([descriptor], [], [], 0.2)[0]:
            chunks.append(os.read(descriptor, 65536))
        elif process.poll() is not None:
            break
    else:
        process.kill()
    process.wait()
    return b"".join(chunks).decode(errors="replace")
