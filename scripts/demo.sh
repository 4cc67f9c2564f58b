#!/usr/bin/env bash
# The offline demo: install (if needed), then run the whole pipeline of config/config.yaml with Snakemake.
# Extra arguments go to snakemake, e.g. `bash scripts/demo.sh --configfile config/my.yaml` or `-n`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake --workflow-profile workflow/profiles/default "$@"
if [ -f results/demo/report/table.md ] && [ $# -eq 0 ]; then
    cat results/demo/report/table.md
fi
