#!/usr/bin/env bash
# Install (if needed) and run the test suite with pytest, in PHYSIOSSL_TEST_WORKERS processes (default 2; 0: in
# this process), each test file in one of them. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -n "${PHYSIOSSL_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
