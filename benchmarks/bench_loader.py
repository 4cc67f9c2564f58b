#!/usr/bin/env python
"""Random-crop loading throughput: physiossl's store → SignalCache → batched CropDataset path against the
reference implementation's layout (a raw .npy memmap read one sample at a time by a map-style Dataset with
DataLoader default collation).

    python benchmarks/bench_loader.py [--records 4000] [--batch 256] [--batches 200] [--crop 250]

Everything is written to --workdir (a fresh temporary directory by default, removed afterwards). The data
are random float32 (N, 12, 1000): the numbers measure the data path, not the content. Both the memmap
cache and the .npy file were just written, so they sit in the page cache: the memmap numbers are "warm".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from physiossl.data.ecg.loading import CropDataset, SignalCache, collate_batch
from physiossl.data.ecg.store import EcgStoreWriter, open_store

N_SAMPLES = 1000


class NpyCropDataset(Dataset):
    """The baseline: one random crop per ``__getitem__`` from a numpy memmap, collated by the DataLoader."""

    def __init__(self, path: Path, crop: int):
        self.data = np.load(path, mmap_mode="r")
        self.crop = crop

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        start = np.random.randint(0, self.data.shape[2] - self.crop + 1)
        return torch.from_numpy(self.data[i, :, start:start + self.crop].copy())


@contextlib.contextmanager
def bench_workdir(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """``workdir`` (created if needed, kept), or with None a fresh temporary directory removed on exit."""
    own_dir = workdir is None
    path = Path(tempfile.mkdtemp(prefix=prefix)) if own_dir else workdir
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if own_dir:
            shutil.rmtree(path, ignore_errors=True)


def build_inputs(workdir: Path, n_records: int, seed: int = 0) -> tuple[Path, Path]:
    """The same random signals as an ECG store (folds 1..10) and as a raw .npy file."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n_records, 12, N_SAMPLES), dtype=np.float32)
    store = workdir / "bench.zarr"
    # the loaders never read the heart rates: not derived (deriving them on white noise was most of the run)
    with EcgStoreWriter.open(store, capacity=n_records, n_samples=N_SAMPLES, fs=100.0, derive_targets=False) as writer:
        for i in range(n_records):
            writer.append(data[i], {"record_id": str(i), "patient_id": str(i), "fold": i % 10 + 1, "age": 50.0,
                                    "sex": "0", "source": "bench"})
        writer.finish(dataset="bench", source_version="random", label_sets={}, provenance={"seed": seed},
                      norm_folds=range(1, 11))
    npy = workdir / "signals.npy"
    np.save(npy, data)
    return store, npy


def throughput(loader: DataLoader, n_batches: int, ndim: int = 3) -> tuple[float, int]:
    """Samples per second over ``n_batches`` batches of ``ndim``-D float32 inputs (epochs restart as needed)."""
    seen = done = 0
    start = time.perf_counter()
    while done < n_batches:
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            assert x.dtype == torch.float32 and x.ndim == ndim
            seen += x.shape[0]
            done += 1
            if done == n_batches:
                break
    return seen / (time.perf_counter() - start), seen


def zarr_read_cost(store: Path, n_reads: int, seed: int = 0) -> float:
    """Mean seconds of one single-record read from the store (what a per-sample zarr Dataset would pay)."""
    sig = open_store(store)["signals"]
    rows = np.random.default_rng(seed).integers(0, sig.shape[0], n_reads)
    sig[int(rows[0])]  # warm up (open the shard index)
    start = time.perf_counter()
    for i in rows:
        sig[int(i)]
    return (time.perf_counter() - start) / n_reads


def usable_cpus() -> int | None:
    """CPUs this process may run on (the affinity mask on Linux, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def machine_info() -> str:
    import zarr

    return (f"machine: {platform.platform()}, python {platform.python_version()}, CPUs {os.cpu_count()} "
            f"(usable {usable_cpus()}), torch threads {torch.get_num_threads()}\n"
            f"versions: torch {torch.__version__}, numpy {np.__version__}, zarr {zarr.__version__}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--crop", type=int, default=250)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for every path")
    parser.add_argument("--zarr-reads", type=int, default=200, help="single-record zarr reads to time (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed after")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    np.random.seed(0)
    results: dict = {}
    with bench_workdir(args.workdir, prefix="physiossl-bench-") as workdir:
        print(machine_info())
        print(f"settings: {args.records} records x 12 x {N_SAMPLES} float32 "
              f"({args.records * 12 * N_SAMPLES * 4 / 2**20:.0f} MiB), "
              f"crop {args.crop}, batch {args.batch}, {args.batches} batches, {args.workers} workers, "
              f"workdir {workdir}")
        t = time.perf_counter()
        store, npy = build_inputs(workdir, args.records)
        print(f"inputs written in {time.perf_counter() - t:.1f} s (store and .npy)")
        loader_kw = dict(batch_size=args.batch, shuffle=True, num_workers=args.workers)

        # (a) and (b): physiossl, a cache filled once from the store, batched crops
        for mode in ("ram", "memmap"):
            t = time.perf_counter()
            cache = SignalCache(store, mode=mode, cache_dir=workdir / "cache")
            fill = time.perf_counter() - t
            extra = ""
            if mode == "memmap":
                t = time.perf_counter()
                cache = SignalCache(store, mode=mode, cache_dir=workdir / "cache")
                extra = f", reopened (reused) in {time.perf_counter() - t:.2f} s"
            loader = DataLoader(CropDataset(cache, args.crop), collate_fn=collate_batch, **loader_kw)
            rate, seen = throughput(loader, args.batches)
            results[mode] = {"fill_s": fill, "samples_per_s": rate, "samples": seen}
            print(f"physiossl {mode:6s}: cache filled in {fill:.2f} s{extra}; {seen} crops")
            del loader, cache

        # (c): the baseline layout
        loader = DataLoader(NpyCropDataset(npy, args.crop), **loader_kw)
        rate, seen = throughput(loader, args.batches)
        results["baseline"] = {"samples_per_s": rate, "samples": seen}
        del loader

        if args.zarr_reads > 0:
            per_read = zarr_read_cost(store, args.zarr_reads)
            results["zarr_read_s"] = per_read

        base = results["baseline"]["samples_per_s"]
        print()
        print(f"{'path':38s} {'samples/s':>12s} {'vs baseline':>12s}")
        print(f"{'baseline: npy memmap, per-item':38s} {base:12,.0f} {1.0:11.2f}x")
        for mode in ("ram", "memmap"):
            rate = results[mode]["samples_per_s"]
            results[mode]["ratio"] = rate / base
            print(f"{'physiossl SignalCache(' + mode + '), batched':38s} {rate:12,.0f} {rate / base:11.2f}x")
        if "zarr_read_s" in results:
            per_read = results["zarr_read_s"]
            print(f"{'(per-sample zarr reads, estimated)':38s} {1 / per_read:12,.0f} {1 / per_read / base:11.2f}x")
        print()
        for mode in ("ram", "memmap"):
            print(f"ratio physiossl/baseline ({mode}): {results[mode]['ratio']:.2f}x "
                  f"(one-off cache fill {results[mode]['fill_s']:.2f} s)")
        if "zarr_read_s" in results:
            print(f"zarr: one single-record read costs {results['zarr_read_s'] * 1e3:.2f} ms "
                  f"({args.zarr_reads} random reads); reading every sample from the store would cap loading at "
                  f"~{1 / results['zarr_read_s']:,.0f} samples/s per process, hence the cache")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
