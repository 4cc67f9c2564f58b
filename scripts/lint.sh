#!/usr/bin/env bash
# Lint: ruff (pyproject.toml [tool.ruff]) over the Python sources, and `snakemake --lint` over every rule (through
# the test that allows only the lint the project decided against, docs/cluster.md). Installs first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests benchmarks scripts docs
exec python -m pytest -p no:xdist -q tests/test_observe.py -k lint
