"""Generate the Python code for protos/ into gen/python; `--check` fails if it is stale.

Usage: python scripts/gen_protos.py [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "gen" / "python"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    proto_files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *proto_files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in {out_dir / Path(p).parent for p in proto_files} | {out_dir / "studio"}:
        (package_dir / "__init__.py").touch()


def stale_files(fresh: Path, committed: Path) -> list[str]:
    fresh_files = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    committed_files = {p.relative_to(committed) for p in committed.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts}
    differing = [str(p) for p in fresh_files & committed_files if not filecmp.cmp(fresh / p, committed / p)]
    return sorted(differing + [str(p) for p in fresh_files ^ committed_files])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/python differs from protos/")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(OUT_ROOT / "studio", ignore_errors=True)
        generate(OUT_ROOT)
        print(f"generated into {OUT_ROOT.relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = stale_files(Path(tmp), OUT_ROOT)
    if stale:
        print("generated code is stale; run `python scripts/gen_protos.py`:", *stale, sep="\n  ")
        sys.exit(1)
    print("generated code is up to date")


if __name__ == "__main__":
    main()
