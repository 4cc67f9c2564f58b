#!/usr/bin/env bash
# The sizing rehearsal of the data half (docs/sizing.md): the demo trees, every conversion (PTB-XL at 100 and 500 Hz,
# CinC 2020, Chapman, CODE test, one CODE-15% part, the PSG-Audio sleep store) and one pretraining epoch of the
# pool, through Snakemake, each job with its benchmark file under <results>/benchmarks/. Then the sizing table.
#   bash scripts/rehearsal.sh config/rehearsal_tenth.yaml      # ~10 min, ~4 GB
#   bash scripts/rehearsal.sh config/rehearsal_full.yaml       # ~2 h on 2 cores, ~35 GB
# Extra arguments go to snakemake (e.g. -n). The raw trees can be deleted afterwards (`rm -r <data>/raw`).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: bash scripts/rehearsal.sh CONFIG [snakemake options]}
shift
export PATH="$PWD/.venv/bin:$PATH"
read -r data results < <(python -c "import sys, yaml; p = yaml.safe_load(open(sys.argv[1]))['paths']; \
print(p['data'], p['results'])" "$config")
targets=(
    "$data/stores/ptbxl_100hz.zarr" "$data/stores/ptbxl_500hz.zarr"
    "$data/stores/cinc2020_100hz.zarr" "$data/stores/chapman_100hz.zarr" "$data/stores/codetest_100hz.zarr"
    "$data/stores/code15_100hz.zarr" "$data/stores/psg_audio_sleep.zarr"
    "$results/pretrain/simclr/encoder.pt"
)
snakemake --cores 2 "$@" --configfile "$config" -- "${targets[@]}"
