#!/usr/bin/env bash
# Create .venv with everything the stack and the tests need (CPU torch from the pinned build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, pinned: a looser requirement would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[all,dev]"
echo "ready: . .venv/bin/activate"
