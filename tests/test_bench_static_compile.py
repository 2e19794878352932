"""bench/static_compile.py: each arm in a child process of its own, its row read back over the child's JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.static_compile import row_line

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_an_eager_arm_reports_its_first_call_and_its_speed() -> None:
    done = subprocess.run([sys.executable, "bench/static_compile.py", "--arms", "eager", "--batch", "1", "--json"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=True)
    summary = json.loads(done.stdout.splitlines()[-1])
    [row] = summary["rows"]
    assert row["arm"] == "eager" and row["first_call_s"] > 0 and row["call_ms"] > 0, row
    assert "dynamic_compile_x_static" not in summary  # one arm: nothing to compare
    assert "x1.00 eager's speed" in row_line(row, row)


def test_a_failed_arm_says_why() -> None:
    assert row_line({"arm": "dynamic", "error": "time box of 900 s reached"}, None) == \
        "dynamic  time box of 900 s reached"
