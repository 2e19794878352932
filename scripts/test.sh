#!/usr/bin/env bash
# Set up (if needed) and run every check CI runs: lint, contracts, generated code, the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/studio ] || bash scripts/setup.sh
. .venv/bin/activate
ruff check .
(cd protos && buf lint)
python scripts/gen_protos.py --check
python -m pytest -q -p no:cacheprovider --durations=15 "$@"
