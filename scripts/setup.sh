#!/usr/bin/env bash
# Create ./.venv with PyTorch and physiossl (editable, with the test extras). Idempotent: a second run
# only reinstalls when pyproject.toml changed.
#   PYTHON=python3.11 bash scripts/setup.sh      # choose the interpreter (>= 3.10)
#   PHYSIOSSL_TORCH="torch==2.13.0"              # the PyTorch requirement installed first (default)
# PyTorch is installed before the project so that pip never resolves it through another package. For a
# CPU-only build on a machine whose default wheel is a CUDA build, point PIP_EXTRA_INDEX_URL at PyTorch's
# CPU wheel index before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${PHYSIOSSL_TORCH:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.physiossl-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "installing $TORCH" >&2
    .venv/bin/python -m pip install --quiet "$TORCH"
fi
echo "installing physiossl and its dependencies" >&2
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "$want" > "$stamp"
