"""How fast Triton's python-backend stub runs the host's share of a render, against this process: the same
host-bound work (nn.Module calls and small torch operations on the CPU, what a launch-bound render spends its host
time on), timed in this process, in a child of each `--python` interpreter and inside a real tritonserver's stub
(bench/stub_probe/, one model: config.pbtxt + model.py).

Why: on the 2026-11-27 H200 (bench/render_results.md), Triton's execute of an SD1.5 batch took 1.10x (graphed) to
1.15x (eager) the same call in-process, with the model busy 100% of the wall: the time went inside the stub, not
between executions. The stub embeds libpython3.x.so. Debian and Ubuntu link /usr/bin/python3 statically instead,
which Fedora measured 5-27% faster (its Changes/PythonStaticSpeedup), so on such a host the in-process rows ran a
faster interpreter than the stub. Each arm says which libpython ran it.

    python bench/stub_speed.py [--rounds 2000] [--repeats 5] [--python /usr/bin/python3.11 ...] [--json]

A `--python` interpreter runs with this process's packages on PYTHONPATH: give one of the same minor version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_REPOSITORY = Path(__file__).resolve().parent / "stub_probe"
PROBE_MODEL = "stub_probe"
STATIC = "none mapped (linked into the executable)"


def workload(rounds: int) -> float:
    """Seconds for `rounds` of the kind of host work a launch-bound render does: module calls through
    nn.Module.__call__, small tensor operations through torch's dispatcher, and plain interpreter work."""
    import torch

    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.SiLU()) for _ in range(4)])
    sample = torch.zeros(2, 8)
    started = time.perf_counter()
    with torch.inference_mode():
        for step in range(rounds):
            hidden = layers(sample)
            hidden = torch.cat([hidden, hidden]).mul_(0.5).add_(step % 7).chunk(2)[0]
            _state = {"step": step, "shape": tuple(hidden.shape), "rows": [row for row in range(4)]}
    return time.perf_counter() - started


def libpython_in_use() -> str:
    """The libpython this process mapped, or STATIC: the interpreter carries it in its executable."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown (no /proc)"
    paths = {line.split()[-1] for line in maps.splitlines() if "libpython" in line}
    return ", ".join(sorted(paths)) or STATIC


def child_arm(python: str, rounds: int) -> tuple[float, str]:
    """The workload once in a child of `python`, with this process's packages: seconds and its libpython."""
    paths = [str(REPO_ROOT), *(path for path in sys.path if path and Path(path).is_dir())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([python, __file__, "--child", "--rounds", str(rounds)], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["libpython"]


def stub_runner(url: str) -> Callable[[int], tuple[float, str]]:
    """A call of the workload inside the probe model's stub: seconds (timed there) and the stub's libpython."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    request = grpcclient.InferInput("ROUNDS", [1], "INT32")

    def run(rounds: int) -> tuple[float, str]:
        request.set_data_from_numpy(np.array([rounds], np.int32))
        result = client.infer(PROBE_MODEL, [request])
        return float(result.as_numpy("SECONDS")[0]), result.as_numpy("LIBPYTHON")[0].decode()

    return run


async def measure(args) -> list[dict]:
    """Best of --repeats for each arm; the arms take turns, so a noisy neighbour slows all of them alike."""
    from services.common.launchers.triton import start_triton

    arms = {"this process": lambda rounds: (workload(rounds), libpython_in_use())}
    arms.update({python: lambda rounds, python=python: child_arm(python, rounds) for python in args.python})
    with tempfile.TemporaryDirectory() as work_dir:
        server = None
        if not args.no_triton:
            work = Path(work_dir)
            server = await start_triton(PROBE_REPOSITORY, work, work / "logs", base_model=REPO_ROOT,
                                        models=(PROBE_MODEL,))
            arms["triton stub"] = stub_runner(server.grpc_url)
        try:
            for arm in arms.values():  # imports and first calls
                await asyncio.to_thread(arm, args.rounds // 10)
            timed: dict[str, list[tuple[float, str]]] = {name: [] for name in arms}
            for _ in range(args.repeats):
                for name, arm in arms.items():
                    timed[name].append(await asyncio.to_thread(arm, args.rounds))
        finally:
            if server is not None:
                server.stop()
    rows = [{"arm": name, "seconds": min(seconds for seconds, _ in runs), "libpython": runs[0][1]}
            for name, runs in timed.items()]
    for row in rows:
        row["over_this_process"] = row["seconds"] / rows[0]["seconds"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", nargs="*", default=[], help="other interpreters to run the workload in")
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.child:
        workload(args.rounds // 10)
        print(json.dumps({"seconds": workload(args.rounds), "libpython": libpython_in_use()}))
        return
    sys.path.insert(0, str(REPO_ROOT))
    from services.common.machine import describe_machine

    print(f"# {describe_machine()}; {sys.executable} (Python {sys.version.split()[0]})", flush=True)
    print(f"# the same host-bound work ({args.rounds} rounds of four Linear+SiLU module calls and small torch "
          f"operations on the CPU), best of {args.repeats} taking turns; the stub times it inside its execute",
          flush=True)
    rows = asyncio.run(measure(args))
    for row in rows:
        print(f"{row['arm']:24} {1000 * row['seconds']:8.1f} ms  x{row['over_this_process']:.2f} this process  "
              f"libpython: {row['libpython']}")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
