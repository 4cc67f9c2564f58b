#!/usr/bin/env python
"""Sleep-sequence loading throughput: physiossl's sleep store → ``load_sleep_arrays`` (chunk-aligned block reads,
float16 in RAM) → batched ``SequenceDataset`` path against a raw float32 .npy memmap of the same epochs read one
sequence of N_s epochs at a time by a map-style Dataset with DataLoader default collation.

    python benchmarks/bench_sleep_loader.py [--nights 40] [--epochs 120] [--n-mels 48] [--frames 300]

Everything is written to --workdir (a fresh temporary directory by default, removed afterwards). The features are
random: the numbers measure the data path, not the content. The .npy file was just written, so the memmap numbers
are "warm" (page cache).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# shared with bench_loader.py (this script's folder is on sys.path when run as `python benchmarks/...`)
from bench_loader import bench_workdir, machine_info, throughput  # noqa: E402
from physiossl.data.sleep.loading import SequenceDataset, collate_batch, load_sleep_arrays, sequence_starts
from physiossl.data.sleep.store import SleepStoreWriter, open_sleep_store

warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class NpySequenceDataset(Dataset):
    """The baseline: one sequence of ``seq_len`` epochs per ``__getitem__`` from a memmap, default collation."""

    def __init__(self, path: Path, starts: np.ndarray, seq_len: int):
        self.data = np.load(path, mmap_mode="r")
        self.starts, self.seq_len = starts, seq_len

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        start = int(self.starts[i])
        # a view of the memmap, no copy (default collation copies it into the batch)
        return torch.from_numpy(np.ascontiguousarray(self.data[start:start + self.seq_len]))


def build_inputs(workdir: Path, nights: int, epochs: int, n_mels: int, frames: int, seed: int = 0) -> tuple[Path, Path]:
    """The same random log-mel epochs as a sleep store and as a raw float32 .npy file."""
    rng = np.random.default_rng(seed)
    # 8 kHz, n_fft 256: the hop that gives `frames` frames per 30 s epoch
    feature = {"audio_fs": 8000, "n_mels": n_mels, "n_fft": 256, "win": 200, "hop": (240000 - 256) // (frames - 1),
               "fmin": 30, "fmax": 3900}
    data = np.empty((nights * epochs, n_mels, frames), np.float32)
    store = workdir / "bench_sleep.zarr"
    with SleepStoreWriter.open(store, dataset="bench", feature=feature, channels=["Mic"]) as writer:
        for k in range(nights):
            night = rng.normal(-40, 10, size=(epochs, n_mels, frames)).astype(np.float16)
            data[k * epochs:(k + 1) * epochs] = night
            writer.add_night(f"n{k:04d}", night, rng.integers(0, 5, epochs).astype(np.int8), labeled=True)
        writer.finish({"seed": seed})
    npy = workdir / "features.npy"
    np.save(npy, data)
    return store, npy


def zarr_read_cost(store: Path, starts: np.ndarray, seq_len: int, n_reads: int, seed: int = 0) -> float:
    """Mean seconds of reading one sequence from the store directly (what a per-sequence zarr Dataset would pay)."""
    features = open_sleep_store(store)["features"]
    picks = np.random.default_rng(seed).choice(starts, n_reads)
    features[int(picks[0]):int(picks[0]) + seq_len]   # warm up (open the shard index)
    start = time.perf_counter()
    for s in picks:
        features[int(s):int(s) + seq_len]
    return (time.perf_counter() - start) / n_reads


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=120, help="30 s epochs per night")
    parser.add_argument("--n-mels", type=int, default=48)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--zarr-reads", type=int, default=100, help="single-sequence zarr reads to time (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory, removed after")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    results: dict = {}
    with bench_workdir(args.workdir, prefix="physiossl-bench-sleep-") as workdir:
        print(machine_info())
        size = args.nights * args.epochs * args.n_mels * args.frames * 4 / 2**20
        print(f"settings: {args.nights} nights x {args.epochs} epochs x {args.n_mels} x {args.frames} ({size:.0f} MiB "
              f"float32), sequences of {args.seq_len}, batch {args.batch}, {args.batches} batches, workdir {workdir}")
        t = time.perf_counter()
        store, npy = build_inputs(workdir, args.nights, args.epochs, args.n_mels, args.frames)
        print(f"inputs written in {time.perf_counter() - t:.1f} s (store and .npy)")

        starts = None
        for dtype in ("float16", "float32"):   # float16: as stored, half the RAM (what train-sleep holds)
            t = time.perf_counter()
            arrays = load_sleep_arrays(store, dtype=np.dtype(dtype))
            fill = time.perf_counter() - t
            starts = sequence_starts(arrays, None, args.seq_len, 1)
            loader = DataLoader(SequenceDataset(arrays, starts, args.seq_len, 4), batch_size=args.batch, shuffle=True,
                                collate_fn=collate_batch)
            rate, seen = throughput(loader, args.batches, ndim=4)
            results[dtype] = {"fill_s": fill, "sequences_per_s": rate, "sequences": seen}
            del loader, arrays
        loader = DataLoader(NpySequenceDataset(npy, starts, args.seq_len), batch_size=args.batch, shuffle=True)
        rate, seen = throughput(loader, args.batches, ndim=4)
        results["baseline"] = {"sequences_per_s": rate, "sequences": seen}
        if args.zarr_reads > 0:
            results["zarr_read_s"] = zarr_read_cost(store, starts, args.seq_len, args.zarr_reads)

        base = results["baseline"]["sequences_per_s"]
        print()
        print(f"{'path':44s} {'sequences/s':>12s} {'vs baseline':>12s}")
        print(f"{'baseline: npy memmap (float32), per-sequence':44s} {base:12,.0f} {1.0:11.2f}x")
        for dtype in ("float16", "float32"):
            results[dtype]["ratio"] = results[dtype]["sequences_per_s"] / base
            print(f"{'physiossl load_sleep_arrays (' + dtype + '), batched':44s} "
                  f"{results[dtype]['sequences_per_s']:12,.0f} {results[dtype]['ratio']:11.2f}x")
        if "zarr_read_s" in results:
            per_read = results["zarr_read_s"]
            print(f"{'(per-sequence zarr reads, estimated)':44s} {1 / per_read:12,.0f} {1 / per_read / base:11.2f}x")
        print()
        for dtype in ("float16", "float32"):
            print(f"ratio physiossl/baseline ({dtype}): {results[dtype]['ratio']:.2f}x "
                  f"(one-off load {results[dtype]['fill_s']:.2f} s)")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
