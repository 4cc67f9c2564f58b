"""The loader benchmark still runs end to end (tiny settings), so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_loader.py"


def test_bench_loader_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "300", "--batch", "32", "--batches", "5", "--crop", "250",
         "--zarr-reads", "5", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for mode in ("ram", "memmap"):
        assert re.search(rf"^ratio physiossl/baseline \({mode}\): \d+\.\d+x", out, re.M), out
    assert "torch threads" in out and "zarr: one single-record read costs" in out
    assert (tmp_path / "bench.zarr").is_dir() and (tmp_path / "signals.npy").is_file()
