#!/usr/bin/env python
"""Data-path benchmark on one set of demo data: pretraining-pool loading, store size, conversion speed.

    python benchmarks/bench_data.py [--ptbxl 1500] [--chapman 600] [--cinc2020 600] [--small]

Seeded demo trees of PTB-XL, Chapman–Shaoxing and CinC 2020 are written to --workdir (a fresh temporary
directory by default, removed afterwards; with an explicit --workdir the trees are kept and reused by later
runs with the same sizes and seed) and converted at 100 Hz. Then, in one run:

1. **Loading** (target >= 1.0x): ``SignalCache([ptbxl, chapman, cinc2020], folds=1..8)`` (fill time) and
   random crops through ``DataLoader(CropDataset(cache, crop), batch_size, shuffle=True,
   collate_fn=collate_batch)``, against the reference implementation's layout: the same selected records
   written once as one (N, 12, T) .npy, read with ``np.load(mmap_mode='r')`` by a per-item Dataset returning
   one random crop, DataLoader default collation, same batch size. Samples/s is the median of --repeats
   runs of --batches batches; the .npy was just written, so both paths read from RAM / the page cache.
2. **Store size** (target <= 0.6x): the sum of the file sizes of each .zarr directory against the raw
   float32 size N x 12 x T x 4 of its ``signals`` array. When the total is above the target (or with
   ``--codecs always``) the same signals are rewritten into a scratch directory with other codecs/filters
   (same chunks and shards) and the resulting store sizes are printed; the project's code is not changed.
3. **Conversion speed** (target >= 0.8x): records/s of ``<source>.convert(raw, out, fs=100)`` against bare
   reading of the same records with the format's reader (PTB-XL: ``wfdb.rdrecord`` of every records100
   record listed in ptbxl_database.csv; Chapman: ``pandas.read_csv`` of every CSV; CinC 2020:
   ``wfdb.rdrecord`` of every record), both on files just written (page cache warm), alternating --repeats
   times: the medians are compared (the first conversion of a process also pays its imports). Faster raw readers
   (``np.fromfile`` of the PTB-XL .dat, ``scipy.io.loadmat`` of the CinC .mat) are printed for reference.
   Then every converted record's stored heart rate is compared with ``heart_rate`` of its stored signal run with
   wfdb's own local-peak search and filter designs (the conversion vectorises and remembers them): the same value,
   or NaN in both, for every record.

The demo signals are synthetic ECG (Gaussian waves per beat, baseline wander, mains hum, white noise,
artifacts), quantised like the real files: PTB-XL at 1 µV in int16 WFDB, CinC 2020 at 1 µV in int16 .mat,
Chapman as 5-significant-digit µV text. How well real recordings compress may differ.
"""

from __future__ import annotations

import os

# the demo generators draw tqdm progress bars; tqdm reads TQDM_* overrides when it is imported
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy  # noqa: E402
import scipy.io  # noqa: E402
import torch  # noqa: E402
import wfdb  # noqa: E402
import zarr  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import physiossl  # noqa: E402

# shared with bench_loader.py (this script's folder is on sys.path when run as `python benchmarks/bench_data.py`):
# the per-item .npy memmap baseline, one timed loader run, the work directory's lifetime, the usable CPU count
from bench_loader import NpyCropDataset, bench_workdir, usable_cpus  # noqa: E402
from bench_loader import throughput as single_run_throughput  # noqa: E402
from physiossl.data.ecg.loading import CropDataset, SignalCache, collate_batch  # noqa: E402
from physiossl.data.ecg.sources import chapman, cinc2020, ptbxl  # noqa: E402

SOURCES = {"ptbxl": ptbxl, "chapman": chapman, "cinc2020": cinc2020}
FS = 100
LOADER_TARGET, SIZE_TARGET, CONVERT_TARGET = 1.0, 0.6, 0.8

warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
warnings.filterwarnings("ignore", message=".*StringDType.*")
warnings.filterwarnings("ignore", message=".*Numcodecs codecs are not in the Zarr version 3.*")


# --------------------------------------------------------------------------------------------- helpers
def machine_info() -> str:
    import numcodecs

    return (f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, python "
            f"{platform.python_version()}, CPUs {os.cpu_count()} (usable {usable_cpus()}), torch threads "
            f"{torch.get_num_threads()}\n"
            f"versions: physiossl {physiossl.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
            f"zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, wfdb {wfdb.__version__}, "
            f"scipy {scipy.__version__}, pandas {pd.__version__}")


def dir_size(path: Path) -> int:
    """Sum of the sizes of the files below ``path`` (apparent sizes, not disk blocks)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def met(value: float, target: float, higher_is_better: bool) -> str:
    return "yes" if (value >= target if higher_is_better else value <= target) else "NO"


# --------------------------------------------------------------------------------------------- inputs
def demo_trees(workdir: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """One seeded demo tree per source (reused when a finished one of the same size and seed is there)."""
    trees = {}
    for name, n in counts.items():
        tree = workdir / "raw" / f"{name}-n{n}-s{seed}"
        if tree.is_dir():
            print(f"demo {name:9s}: {n} records, reused {tree}")
        else:
            _, secs = timed(SOURCES[name].demo, tree, n_records=n, seed=seed)
            print(f"demo {name:9s}: {n} records written in {secs:.1f} s")
        trees[name] = tree
    return trees


# --------------------------------------------------------------------------------------------- 3. conversion
def bare_ptbxl(raw: Path) -> tuple[int, float]:
    files = pd.read_csv(raw / "ptbxl_database.csv")["filename_lr"].tolist()
    start = time.perf_counter()
    for f in files:
        wfdb.rdrecord(str(raw / f))
    return len(files), time.perf_counter() - start


def bytes_ptbxl(raw: Path) -> tuple[int, float]:
    """Reference floor: the int16 samples of each .dat with numpy, the header as text (no parsing)."""
    files = pd.read_csv(raw / "ptbxl_database.csv")["filename_lr"].tolist()
    start = time.perf_counter()
    for f in files:
        (raw / f"{f}.hea").read_text()
        np.fromfile(raw / f"{f}.dat", dtype="<i2").reshape(-1, 12)
    return len(files), time.perf_counter() - start


def bare_chapman(raw: Path) -> tuple[int, float]:
    files = sorted((raw / "ECGDataDenoised").glob("*.csv"))
    start = time.perf_counter()
    for f in files:
        pd.read_csv(f, header=None)
    return len(files), time.perf_counter() - start


def _cinc_headers(raw: Path) -> list[Path]:
    return sorted((raw / "training").rglob("*.hea"))


def bare_cinc2020(raw: Path) -> tuple[int, float]:
    files = _cinc_headers(raw)
    start = time.perf_counter()
    for f in files:
        wfdb.rdrecord(str(f.with_suffix("")))
    return len(files), time.perf_counter() - start


def loadmat_cinc2020(raw: Path) -> tuple[int, float]:
    """Reference floor: header text + ``scipy.io.loadmat`` of the .mat."""
    files = _cinc_headers(raw)
    start = time.perf_counter()
    for f in files:
        f.read_text()
        scipy.io.loadmat(str(f.with_suffix(".mat")))
    return len(files), time.perf_counter() - start


BARE = {"ptbxl": ("wfdb.rdrecord", bare_ptbxl), "chapman": ("pandas.read_csv", bare_chapman),
        "cinc2020": ("wfdb.rdrecord", bare_cinc2020)}
FLOOR = {"ptbxl": ("np.fromfile .dat + .hea text", bytes_ptbxl),
         "cinc2020": ("scipy.io.loadmat + .hea text", loadmat_cinc2020)}


def conversion(trees: dict[str, Path], store_dir: Path, repeats: int) -> tuple[dict[str, Path], dict]:
    print(f"\n== 3. conversion speed: <source>.convert(raw, out, fs=100) vs bare reading (page cache warm), "
          f"median of {repeats} alternating runs")
    print(f"{'source':9s} {'records':>8s} {'convert rec/s':>14s} {'bare rec/s':>11s} {'ratio':>7s}  bare reader")
    stores, results = {}, {}
    for name, raw in trees.items():
        reader, bare = BARE[name]
        out = store_dir / f"{name}_{FS}hz.zarr"
        bare_runs, conv_runs = [], []
        for _ in range(repeats):
            n_bare, bare_s = bare(raw)
            shutil.rmtree(out, ignore_errors=True)
            summary, conv_s = timed(SOURCES[name].convert, raw, out, fs=FS, progress=False)
            bare_runs.append(bare_s)
            conv_runs.append(conv_s)
        bare_s, conv_s = float(np.median(bare_runs)), float(np.median(conv_runs))
        n = summary["records"] + summary["quarantined"]
        if n != n_bare:
            print(f"  note: convert saw {n} records, the bare reader {n_bare}")
        conv_rate, bare_rate = n / conv_s, n_bare / bare_s
        results[name] = {"records": n, "convert_s": conv_s, "bare_s": bare_s, "convert_runs_s": conv_runs,
                         "bare_runs_s": bare_runs, "convert_rec_s": conv_rate, "bare_rec_s": bare_rate,
                         "ratio": conv_rate / bare_rate, "reader": reader, "quarantined": summary["quarantined"]}
        print(f"{name:9s} {n:8d} {conv_rate:14.1f} {bare_rate:11.1f} {conv_rate / bare_rate:6.2f}x  {reader} "
              f"(convert {conv_s:.1f} s, bare {bare_s:.1f} s, {summary['quarantined']} quarantined)")
        stores[name] = out
    for name, (reader, floor) in FLOOR.items():
        if name in trees:
            n, secs = floor(trees[name])
            results[name]["floor_rec_s"] = n / secs
            print(f"  reference {name}: {reader}: {n / secs:,.0f} rec/s "
                  f"(convert would be {results[name]['convert_rec_s'] / (n / secs):.2f}x of it)")
    return stores, results


# --------------------------------------------------------------------------------------------- 1. loading
def heart_rate_check(stores: dict[str, Path]) -> dict:
    """Every record's stored heart rate against ``heart_rate`` of the stored signal with wfdb's own local-peak search
    and filter designs (the conversion runs xqrs with them vectorised and remembered): the same value or both NaN."""
    import contextlib

    from physiossl.data.ecg import targets
    from physiossl.data.ecg.store import open_store

    print("\n== heart rates of the converted records against xqrs with wfdb's own peak search")
    out, original = {}, targets._vectorised_peak_search
    targets._vectorised_peak_search = contextlib.nullcontext
    try:
        for name, path in stores.items():
            root = open_store(path)
            fs, stored = float(root.attrs["fs"]), root["targets/heart_rate"][:]
            signals, lengths = root["signals"][:], root["lengths"][:]
            same = 0
            for i in range(len(stored)):
                value = np.float32(targets.heart_rate(signals[i, :, :lengths[i]], fs)[0])   # the valid samples
                same += bool(value == stored[i] or (np.isnan(value) and np.isnan(stored[i])))
            out[name] = {"records": len(stored), "identical": same}
            print(f"{name:9s} {same} of {len(stored)} records identical ({int(np.isfinite(stored).sum())} with a rate)")
    finally:
        targets._vectorised_peak_search = original
    return out


def throughput(loader: DataLoader, n_batches: int, repeats: int) -> float:
    """Median samples per second over ``repeats`` runs of ``n_batches`` batches (epochs restart as needed)."""
    return float(np.median([single_run_throughput(loader, n_batches)[0] for _ in range(repeats)]))


def loading(stores: dict[str, Path], workdir: Path, args) -> dict:
    print("\n== 1. training data path: pool of stores -> SignalCache -> batched crops vs per-item .npy memmap")
    folds = range(1, 9)
    cache, fill_s = timed(SignalCache, list(stores.values()), folds=folds)
    crop = int(round(args.crop_seconds * cache.fs))
    per_store = ", ".join(f"{name} {int((cache.datasets == SOURCES[name].NAME).sum())}" for name in stores)
    print(f"pool: {len(cache)} records of folds 1..8 ({per_store}), array {tuple(cache.data.shape)} float32 "
          f"({cache.data.nbytes / 2**20:.0f} MiB); SignalCache filled in {fill_s:.2f} s "
          f"({len(cache) / fill_s:,.0f} records/s)")
    npy = workdir / "pool_signals.npy"
    _, npy_s = timed(np.save, npy, np.asarray(cache.data))
    print(f"baseline input: the same records written once to {npy.name} in {npy_s:.2f} s")
    print(f"crop {crop} samples ({args.crop_seconds:g} s), batch {args.batch}, {args.batches} batches x "
          f"{args.repeats} repeats (median), {args.workers} workers")
    kw = dict(batch_size=args.batch, shuffle=True, num_workers=args.workers)
    ours = throughput(DataLoader(CropDataset(cache, crop), collate_fn=collate_batch, **kw), args.batches, args.repeats)
    base = throughput(DataLoader(NpyCropDataset(npy, crop), **kw), args.batches, args.repeats)
    print(f"{'path':44s} {'samples/s':>12s} {'vs baseline':>12s}")
    print(f"{'baseline: npy memmap, per-item, default collate':44s} {base:12,.0f} {1.0:11.2f}x")
    print(f"{'physiossl: SignalCache(pool), batched crops':44s} {ours:12,.0f} {ours / base:11.2f}x")
    return {"records": len(cache), "fill_s": fill_s, "npy_write_s": npy_s, "samples_per_s": ours,
            "baseline_samples_per_s": base, "ratio": ours / base}


# --------------------------------------------------------------------------------------------- 2. size
def store_sizes(stores: dict[str, Path]) -> dict:
    print("\n== 2. store size on disk (sum of file sizes of the .zarr directory) vs raw float32 (N x 12 x T x 4)")
    print(f"{'store':9s} {'shape':>18s} {'raw MiB':>9s} {'store MiB':>10s} {'signals/ MiB':>13s} {'ratio':>7s}")
    out, raw_total, disk_total = {}, 0, 0
    for name, path in stores.items():
        sig = zarr.open_group(str(path), mode="r")["signals"]
        raw = int(np.prod(sig.shape)) * 4
        disk, sig_disk = dir_size(path), dir_size(path / "signals")
        out[name] = {"raw": raw, "disk": disk, "signals_disk": sig_disk, "ratio": disk / raw,
                     "codecs": f"filters {tuple(sig.filters)}, compressors {tuple(sig.compressors)}"}
        raw_total, disk_total = raw_total + raw, disk_total + disk
        print(f"{name:9s} {str(tuple(sig.shape)):>18s} {raw / 2**20:9.1f} {disk / 2**20:10.1f} "
              f"{sig_disk / 2**20:13.1f} {disk / raw:6.2f}x")
    out["total"] = {"raw": raw_total, "disk": disk_total, "ratio": disk_total / raw_total}
    print(f"{'total':9s} {'':>18s} {raw_total / 2**20:9.1f} {disk_total / 2**20:10.1f} {'':>13s} "
          f"{disk_total / raw_total:6.2f}x")
    first = next(iter(stores))
    print(f"current signals codecs: {out[first]['codecs']}, "
          f"chunks {zarr.open_group(str(stores[first]), mode='r')['signals'].chunks}")
    return out


def codec_alternatives() -> list[tuple[str, str, bool, dict]]:
    """(label, stored dtype, lossless, create_array kwargs) of the codec settings to try."""
    from zarr.codecs import BloscCodec, ZstdCodec
    from zarr.codecs.numcodecs import Delta, Quantize

    def bitshuffle(cname="zstd"):
        return BloscCodec(cname=cname, clevel=5, shuffle="bitshuffle")

    return [
        ("float32 zstd level 0 (current, re-measured)", "f4", True, {"compressors": ZstdCodec(level=0)}),
        ("float32 zstd level 9", "f4", True, {"compressors": ZstdCodec(level=9)}),
        ("float32 blosc-zstd5 byte shuffle", "f4", True,
         {"compressors": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")}),
        ("float32 blosc-zstd5 bitshuffle", "f4", True, {"compressors": bitshuffle()}),
        ("float32 delta + zstd (float delta: not exact)", "f4", False,
         {"filters": [Delta(dtype="<f4")], "compressors": ZstdCodec(level=0)}),
        ("float32 Quantize(1e-3 mV) + zstd", "f4", False,
         {"filters": [Quantize(digits=3, dtype="<f4")], "compressors": ZstdCodec(level=0)}),
        ("float32 Quantize(1e-3 mV) + blosc-zstd bitshuffle", "f4", False,
         {"filters": [Quantize(digits=3, dtype="<f4")], "compressors": bitshuffle()}),
        ("int16 1 uV + zstd", "i2", False, {"compressors": ZstdCodec(level=0)}),
        ("int16 1 uV + blosc-zstd bitshuffle", "i2", False, {"compressors": bitshuffle()}),
        ("int16 1 uV + delta + zstd", "i2", False,
         {"filters": [Delta(dtype="<i2")], "compressors": ZstdCodec(level=0)}),
        ("int16 1 uV + delta + blosc-zstd bitshuffle", "i2", False,
         {"filters": [Delta(dtype="<i2")], "compressors": bitshuffle()}),
    ]


def size_alternatives(stores: dict[str, Path], sizes: dict, scratch: Path) -> dict:
    """Rewrite each store's signals with other codecs in ``scratch``; store size = the store's other files +
    the rewritten signals. int16: round(mV x 1000) (1 µV, the ADC step of PTB-XL and CinC 2020 at gain 1000)."""
    print("\n-- store size with other codecs/filters for `signals` (scratch copies, same chunks/shards; "
          "project code unchanged)")
    signals = {name: zarr.open_group(str(p), mode="r")["signals"] for name, p in stores.items()}
    arrays = {name: sig[:] for name, sig in signals.items()}
    ints = {}
    for name, x in arrays.items():
        scaled = np.round(x.astype(np.float64) * 1000.0)
        clipped = int((np.abs(scaled) > 32767).sum())
        ints[name] = np.clip(scaled, -32767, 32767).astype(np.int16)
        on_grid = float(np.mean(np.abs(scaled / 1000.0 - x) < 1e-6))
        print(f"  {name}: |x| max {np.abs(x).max():.2f} mV, {clipped} samples clipped by int16 at 1 uV, "
              f"{on_grid:.1%} of the float32 samples already on the 1 uV grid (within 1e-6 mV)")
    names = list(stores)
    header = " ".join(f"{n:>9s}" for n in names)
    print(f"  {'signals codec':50s} {header} {'total':>7s} {'write s':>8s} {'read s':>7s} {'max err':>9s}")
    results = {}
    for label, kind, lossless, kw in codec_alternatives():
        per, total_disk, write_s, read_s, err = {}, 0, 0.0, 0.0, 0.0
        for name, sig in signals.items():
            data = arrays[name] if kind == "f4" else ints[name]
            path = scratch / f"{name}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            arr = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=sig.chunks,
                                    shards=sig.shards, fill_value=0, **kw)
            arr[:] = data
            write_s += time.perf_counter() - start
            back, secs = timed(lambda: zarr.open_array(str(path), mode="r")[:])
            read_s += secs
            back = back.astype(np.float64) / 1000.0 if kind == "i2" else back.astype(np.float64)
            err = max(err, float(np.abs(back - arrays[name]).max()))
            disk = sizes[name]["disk"] - sizes[name]["signals_disk"] + dir_size(path)
            per[name] = disk / sizes[name]["raw"]
            total_disk += disk
            shutil.rmtree(path, ignore_errors=True)
        total = total_disk / sizes["total"]["raw"]
        results[label] = {"per_store": per, "total": total, "write_s": write_s, "read_s": read_s,
                          "max_abs_err_uV": err * 1000, "lossless": lossless and err == 0.0}
        cells = " ".join(f"{per[n]:8.2f}x" for n in names)
        error = "exact" if err == 0.0 else f"{err * 1000:.2g} uV"
        print(f"  {label:50s} {cells} {total:6.2f}x {write_s:8.2f} {read_s:7.2f} {error:>9s}")
    # context: incompressible data of the same layout
    from zarr.codecs import ZstdCodec

    first = names[0]
    noise = np.random.default_rng(0).standard_normal(arrays[first].shape, dtype=np.float32)
    path = scratch / "noise.zarr"
    arr = zarr.create_array(str(path), shape=noise.shape, dtype=noise.dtype, chunks=signals[first].chunks,
                            shards=signals[first].shards, fill_value=0, compressors=ZstdCodec(level=0))
    arr[:] = noise
    print(f"  (context: Gaussian white noise of {first}'s shape, float32 zstd level 0: "
          f"{dir_size(path) / noise.nbytes:.2f}x of raw)")
    shutil.rmtree(path, ignore_errors=True)
    return results


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptbxl", type=int, default=1500, help="PTB-XL demo records")
    parser.add_argument("--chapman", type=int, default=600, help="Chapman demo records")
    parser.add_argument("--cinc2020", type=int, default=600, help="CinC 2020 demo records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=100, help="batches per timed loader run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed loader runs and conversions (the medians are reported)")
    parser.add_argument("--crop-seconds", type=float, default=2.5)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for both paths")
    parser.add_argument("--codecs", choices=("auto", "always", "never"), default="auto",
                        help="measure other codecs for the signals: auto = when the store ratio misses its target")
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes for a smoke test (60/30/30 records, batch 32, 5 batches, 1 repeat)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="kept, and demo trees in it reused (default: a temporary directory, removed after)")
    args = parser.parse_args(argv)
    if args.small:
        args.ptbxl, args.chapman, args.cinc2020 = 60, 30, 30
        args.batch, args.batches, args.repeats = 32, 5, 1

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    results: dict = {}
    with bench_workdir(args.workdir, prefix="physiossl-bench-data-") as workdir:
        print(machine_info())
        counts = {"ptbxl": args.ptbxl, "chapman": args.chapman, "cinc2020": args.cinc2020}
        print(f"settings: demo records {counts}, seed {args.seed}, {FS} Hz stores, workdir {workdir}")
        start = time.perf_counter()
        trees = demo_trees(workdir, counts, args.seed)
        stores, results["conversion"] = conversion(trees, workdir / "stores", args.repeats)
        results["heart_rate"] = heart_rate_check(stores)
        results["loading"] = loading(stores, workdir, args)
        results["size"] = store_sizes(stores)
        if args.codecs == "always" or (args.codecs == "auto" and results["size"]["total"]["ratio"] > SIZE_TARGET):
            results["size_alternatives"] = size_alternatives(stores, results["size"], workdir / "scratch")

        rows = [("loading: pool SignalCache / npy memmap", results["loading"]["ratio"], LOADER_TARGET, True)]
        rows += [(f"store size: {name} / raw float32", results["size"][name]["ratio"], SIZE_TARGET, False)
                 for name in stores]
        rows.append(("store size: total / raw float32", results["size"]["total"]["ratio"], SIZE_TARGET, False))
        rows += [(f"conversion: {name} convert / bare read", results["conversion"][name]["ratio"], CONVERT_TARGET,
                  True) for name in stores]
        identical = all(r["identical"] == r["records"] for r in results["heart_rate"].values())
        print("\n== summary")
        print(f"{'metric':44s} {'ratio':>7s} {'target':>9s}  met")
        for label, value, target, higher in rows:
            sign = ">=" if higher else "<="
            print(f"{label:44s} {value:6.2f}x {sign} {target:.2f}x  {met(value, target, higher)}")
        print(f"{'heart rates: identical to wfdb peak search':44s} {'':>7s} {'':>9s}  {'yes' if identical else 'NO'}")
        results["summary"] = [{"metric": label, "ratio": value, "target": target, "higher_is_better": higher,
                               "met": met(value, target, higher) == "yes"} for label, value, target, higher in rows]
        results["summary"].append({"metric": "heart rates: identical to wfdb peak search", "met": identical})
        print(f"total time {time.perf_counter() - start:.0f} s")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
