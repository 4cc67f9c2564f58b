"""The loader benchmark still runs end to end (tiny settings), so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

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


DATA_SCRIPT = SCRIPT.with_name("bench_data.py")


def test_bench_data_runs(tmp_path):
    """bench_data.py --small: the three measurements and the summary table, in well under 20 s."""
    proc = subprocess.run(
        [sys.executable, str(DATA_SCRIPT), "--small", "--codecs", "always", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "torch threads" in out and "versions: physiossl" in out
    assert "== summary" in out
    rows = ["loading: pool SignalCache / npy memmap"]
    rows += [f"store size: {name} / raw float32" for name in ("ptbxl", "chapman", "cinc2020", "total")]
    rows += [f"conversion: {name} convert / bare read" for name in ("ptbxl", "chapman", "cinc2020")]
    for row in rows:
        assert re.search(rf"^{re.escape(row)}\s+\d+\.\d+x (>=|<=) \d\.\d\dx\s+(yes|NO)$", out, re.M), (row, out)
    assert re.search(r"^heart rates: identical to wfdb peak search\s+yes$", out, re.M), out
    for name, n in (("ptbxl", 60), ("chapman", 30), ("cinc2020", 30)):
        assert re.search(rf"^{name}\s+{n} of {n} records identical", out, re.M), out
    assert "float32 zstd level 0 (current, re-measured)" in out and "int16 1 uV" in out
    assert all((tmp_path / "stores" / f"{name}_100hz.zarr").is_dir() for name in ("ptbxl", "chapman", "cinc2020"))
    assert (tmp_path / "pool_signals.npy").is_file()


METHODS_SCRIPT = SCRIPT.with_name("bench_methods.py")


def test_bench_methods_runs_every_method():
    """bench_methods.py with the demo grid's CPU-sized heads: one timed step of every method of the grid and of
    the baseline."""
    config = SCRIPT.parents[1] / "config" / "demo_methods.yaml"
    methods = yaml.safe_load(config.read_text())["pretrain"]["methods"]
    proc = subprocess.run(
        [sys.executable, str(METHODS_SCRIPT), "--config", str(config), "--batch", "8", "--steps", "1", "--warmup", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "torch threads" in out and "precision 32-true" in out
    assert re.search(r"^supervised\s+xresnet1d50\s+crop\s+250\s+\d+\.\d samples/s", out, re.M), out
    for name in methods:
        assert re.search(rf"^{name}\s+\S+\s+crop\s+\d+\s+\d+\.\d samples/s\s+\d+\.\d{{3,}}x$", out, re.M), (name, out)
        assert re.search(rf"^ratio {name}/supervised: \d+\.\d{{3,}}x$", out, re.M), (name, out)
    assert re.search(r"^cpc\s+cpc\s+crop\s+250\s", out, re.M), out


def test_bench_methods_options_and_mixed_precision():
    """--device and --precision are offered (cuda and bf16-mixed for GPU machines); bf16-mixed runs on CPU for the
    methods chosen with --methods; ratios keep 3 significant digits."""
    help_text = subprocess.run([sys.executable, str(METHODS_SCRIPT), "--help"], capture_output=True, text=True,
                               timeout=300).stdout
    assert "--device {cpu,cuda}" in help_text and "--precision {32-true,16-mixed,bf16-mixed}" in help_text
    config = SCRIPT.parents[1] / "config" / "demo_methods.yaml"
    proc = subprocess.run(
        [sys.executable, str(METHODS_SCRIPT), "--config", str(config), "--methods", "cpc", "barlow_twins",
         "--precision", "bf16-mixed", "--batch", "4", "--steps", "1", "--warmup", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "precision bf16-mixed" in out
    ratios = re.findall(r"^ratio (\w+)/supervised: \d+\.\d{3,}x$", out, re.M)
    assert ratios == ["cpc", "barlow_twins"], out
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bench_methods import ratio_text
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert [ratio_text(r) for r in (0.00507, 0.0451, 0.448, 1.0, 12.3)] == [
        "0.00507x", "0.0451x", "0.448x", "1.000x", "12.300x"]


TARGETS_SCRIPT = SCRIPT.with_name("bench_targets.py")


def test_bench_targets_runs():
    """bench_targets.py on a few records: the heart-rate derivation timed against resampling, with its accuracy."""
    proc = subprocess.run([sys.executable, str(TARGETS_SCRIPT), "--records", "6", "--fs", "100", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^ratio heart_rate/resample \(100 Hz\): \d+\.\d{2}x, \d+ records/s$", proc.stdout,
                     re.M), proc.stdout
    assert re.search(r"accuracy vs spec rate \(100 Hz\): valid \d+\.\d%", proc.stdout), proc.stdout


SLEEP_SCRIPT = SCRIPT.with_name("bench_sleep_loader.py")


def test_bench_sleep_loader_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SLEEP_SCRIPT), "--nights", "4", "--epochs", "20", "--n-mels", "8", "--frames", "50",
         "--batch", "8", "--batches", "5", "--zarr-reads", "5", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for dtype in ("float16", "float32"):
        assert re.search(rf"^ratio physiossl/baseline \({dtype}\): \d+\.\d+x", proc.stdout, re.M), proc.stdout
    assert "(per-sequence zarr reads, estimated)" in proc.stdout
    assert (tmp_path / "bench_sleep.zarr").is_dir() and (tmp_path / "features.npy").is_file()


PRETRAIN_SCRIPT = SCRIPT.with_name("bench_pretrain.py")


def test_bench_pretrain_runs_an_epoch_per_worker_count(tmp_path):
    """bench_pretrain.py on a tiny synthetic store on the CPU: one timed row per --workers value and the ratios."""
    proc = subprocess.run(
        [sys.executable, str(PRETRAIN_SCRIPT), "--records", "120", "--workers", "0", "1", "--steps", "4",
         "--warmup", "1", "--batch", "8", "--device", "cpu", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"^\s+(\d+)\s+4\s+8\s+(\d+\.\d)\s+n/a\s+n/a$", proc.stdout, re.M)
    assert [int(w) for w, _ in rows] == [0, 1] and all(float(rate) > 0 for _, rate in rows), proc.stdout
    assert "ratio workers=1/workers=0:" in proc.stdout and "pool: 96 records" in proc.stdout
    assert (tmp_path / "synthetic_120.zarr").is_dir()


def test_bench_planning_times_the_dry_run_against_snakemakes_start():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("bench_planning.py")), "--config", "config/config.yaml",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("snakemake --version", "snakemake -n --configfile config/config.yaml",
                    "physiossl check-config config/config.yaml"):
        row = rf"^\s+current\s+{re.escape(command)}\s+\d+\.\d\d\s+\d+\.\d\dx$"
        assert re.search(row, proc.stdout, re.M), proc.stdout
