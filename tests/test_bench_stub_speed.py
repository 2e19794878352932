"""bench/stub_speed.py: the same host-bound work timed here, in a child interpreter and inside a real tritonserver's
python-backend stub, each arm naming the libpython that ran it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
from argparse import Namespace
from pathlib import Path

from bench.stub_speed import STATIC, libpython_in_use, measure, workload


def linked_libpython() -> str:
    """The libpython the dynamic linker gives this interpreter's executable, "" when it carries its own (Debian's
    /usr/bin/python3, whose sysconfig still says Py_ENABLE_SHARED: the shared build's)."""
    linked = subprocess.run(["ldd", os.path.realpath(sys.executable)], capture_output=True, text=True).stdout
    return next((line.split("=>")[1].split()[0] for line in linked.splitlines() if "libpython" in line), "")


def test_this_process_names_its_libpython() -> None:
    linked = linked_libpython()
    assert libpython_in_use() == (os.path.realpath(linked) if linked else STATIC)


def test_more_rounds_take_longer() -> None:
    workload(20)
    assert min(workload(400) for _ in range(3)) > min(workload(20) for _ in range(3))


def test_every_arm_runs_the_workload_and_the_stub_embeds_a_libpython() -> None:
    rows = asyncio.run(measure(Namespace(rounds=200, repeats=2, python=[sys.executable], no_triton=False)))
    assert [row["arm"] for row in rows] == ["this process", sys.executable, "triton stub"]
    assert all(row["seconds"] > 0 for row in rows)
    assert rows[0]["over_this_process"] == 1.0
    assert rows[1]["libpython"] == rows[0]["libpython"]  # the same interpreter in a child
    # The stub is no python executable: it always embeds a shared libpython, the one the launcher's
    # LD_LIBRARY_PATH gives it (the running interpreter's LIBDIR), whatever this interpreter links.
    assert Path(rows[2]["libpython"]).name.startswith(f"libpython{sys.version_info.major}.{sys.version_info.minor}")
    assert Path(rows[2]["libpython"]).parent == Path(sysconfig.get_config_var("LIBDIR")).resolve()
