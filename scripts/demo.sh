#!/usr/bin/env bash
# The offline demo: install (if needed), then run the whole pipeline of config/config.yaml with Snakemake.
# Extra arguments go to snakemake, e.g. `bash scripts/demo.sh --configfile config/demo_methods.yaml` or `-n`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
snakemake "$@"

config=config/config.yaml
dry_run=false
previous=""
for arg in "$@"; do
    [ "$previous" = "--configfile" ] && config="$arg"
    case "$arg" in --configfile=*) config="${arg#--configfile=}" ;; -n|--dry-run|--dryrun) dry_run=true ;; esac
    previous="$arg"
done
results=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['paths']['results'])" "$config")
if [ "$dry_run" = false ] && [ -d "$results/report" ]; then
    for table in table.md periodic.md sleep.md; do
        [ -f "$results/report/$table" ] && { cat "$results/report/$table"; echo; }
    done
    echo "figures and CSV tables: $results/report/"
fi
