#!/usr/bin/env bash
# The GPU measurements, in one short run on a machine with an NVIDIA GPU (a cluster node or a lent machine), each
# published into docs/results/benchmarks/ with the card's name (scripts/publish_results.sh --benchmark):
#   bench_methods.gpu          training-step throughput of every method against supervised, in mixed precision
#   bench_pretrain.gpu_demo    one pretraining epoch on the default demo's PTB-XL store, per loader worker count
#   bench_pretrain.gpu         one pretraining epoch (at most STEPS steps) on a PTB-XL-sized synthetic store
# samples/s, peak GPU memory and GPU utilisation. Settings: PRECISION (bf16-mixed), WORKERS ("0 4 8"), STEPS (300),
# PYTHON (the first of .venv/bin/python and python3 whose torch sees a CUDA device).
#   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in .venv/bin/python python3; do
        if "$candidate" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
            python="$candidate"
            break
        fi
    done
fi
[ -n "$python" ] || { echo "gpu_check.sh: no Python whose torch sees a CUDA device (set PYTHON=...)" >&2; exit 1; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
precision="${PRECISION:-bf16-mixed}"
read -r -a workers <<< "${WORKERS:-0 4 8}"
steps="${STEPS:-300}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
publish() { bash scripts/publish_results.sh --benchmark "$@"; }

publish bench_methods.gpu -- "$python" benchmarks/bench_methods.py --device cuda --precision "$precision"
publish bench_pretrain.gpu_demo -- "$python" benchmarks/bench_pretrain.py --device cuda --precision "$precision" \
    --demo-records 1500 --workdir "$work" --workers "${workers[@]}"
publish bench_pretrain.gpu -- "$python" benchmarks/bench_pretrain.py --device cuda --precision "$precision" \
    --records 21799 --steps "$steps" --workdir "$work" --workers "${workers[@]}"
