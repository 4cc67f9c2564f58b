#!/usr/bin/env python
"""One pretraining epoch through the real data path — ``SignalCache`` filled from a store, ``CropDataset`` with the
checkpointed ``RandomCrops`` sampler, the DataLoader with ``num_workers`` workers, the method's views, forward,
backward and optimiser step — timed for each ``--workers`` setting: samples/s, peak GPU memory and GPU utilisation.

    python benchmarks/bench_pretrain.py [--store PATH ... | --demo-records 1500 | --records 21799] [--workers 0 2 4 8]
                                        [--method simclr] [--config config/config.yaml] [--device cpu|cuda]
                                        [--precision 32-true|16-mixed|bf16-mixed] [--steps N] [--workdir DIR]

``--store`` times the given stores (e.g. the demo's ``data/demo/stores/ptbxl_100hz.zarr``, or the members of a
pool); ``--demo-records N`` writes the default config's PTB-XL demo tree of N records (seed 0) and converts it at
100 Hz, as the demo does; otherwise a synthetic store of ``--records`` 10 s records at 100 Hz (white noise, the size
of PTB-XL by default) is written first (heart rates not derived). Generated stores go to ``--workdir``. The method,
its encoder and hyperparameters come from ``pretrain`` of ``--config``; its ``pretrain.trainer.batch_size`` unless
``--batch``. Samples/s counts the steps after the first ``--warmup`` of each epoch (the workers' start and the first
CUDA kernels do not count); ``--steps`` caps the epoch. GPU utilisation is the mean of ``nvidia-smi`` samples taken
every 0.2 s during the timed steps (n/a without nvidia-smi). The ratio of each setting to ``num_workers=0`` is
printed last. ``bash scripts/gpu_check.sh`` runs it on a GPU machine and publishes what it prints.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import machine_info  # noqa: E402
from physiossl.config import load_config  # noqa: E402
from physiossl.data.ecg.loading import CropDataset, RandomCrops, SignalCache, collate_batch  # noqa: E402
from physiossl.data.ecg.store import EcgStoreWriter  # noqa: E402
from physiossl.methods import get_method  # noqa: E402
from physiossl.stages.pretrain import method_encoder  # noqa: E402

FS = 100.0
N_SAMPLES = 1000


def synthetic_store(path: Path, n_records: int, seed: int = 0, block: int = 1024) -> Path:
    """``n_records`` white-noise records (12 × 10 s at 100 Hz, folds 1..10), written block by block."""
    rng = np.random.default_rng(seed)
    with EcgStoreWriter.open(path, capacity=n_records, n_samples=N_SAMPLES, fs=FS, derive_targets=False) as writer:
        for start in range(0, n_records, block):
            data = rng.standard_normal((min(block, n_records - start), 12, N_SAMPLES), dtype=np.float32)
            for i, signal in enumerate(data, start):
                writer.append(signal, {"record_id": str(i), "patient_id": str(i), "fold": i % 10 + 1, "age": None,
                                       "sex": "", "source": "bench"})
        writer.finish(dataset="bench", source_version="random", label_sets={}, provenance={"seed": seed},
                      norm_folds=range(1, 11))
    return path


class GpuSampler:
    """Mean GPU utilisation (%) from ``nvidia-smi`` every ``period`` s while running; None without nvidia-smi."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.available = shutil.which("nvidia-smi") is not None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "--id=0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def start(self) -> None:
        if self.available:
            self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self.available:
            self._thread.join()
        return float(np.mean(self.samples)) if self.samples else None


class StepTimer(Callback):
    """Wall time of the training steps after the first ``warmup`` ones; GPU sampling during them."""

    def __init__(self, warmup: int, sampler: GpuSampler, device: torch.device):
        self.warmup, self.sampler, self.device = warmup, sampler, device
        self.steps, self.start, self.seconds = 0, None, None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self._sync()
            self.start = time.perf_counter()
            self.sampler.start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync()
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def one_epoch(config: dict, method: str, cache: SignalCache, workers: int, args) -> dict:
    p = config["pretrain"]
    method_cfg = p["methods"][method]
    encoder, encoder_args = method_encoder(p, method_cfg)
    crop = int(round(method_cfg.get("crop_s", p["crop_s"]) * cache.fs))
    dataset = CropDataset(cache, crop)
    batch = args.batch or method_cfg.get("batch_size", p["trainer"]["batch_size"])
    steps = len(dataset) // batch if args.steps is None else min(args.steps, len(dataset) // batch)
    if steps <= args.warmup:
        raise SystemExit(f"{len(dataset)} records give {steps} steps of batch {batch}: need more than "
                         f"--warmup {args.warmup}")
    loader = DataLoader(dataset, batch_size=batch, sampler=RandomCrops(len(dataset), torch.Generator().manual_seed(0)),
                        drop_last=True, collate_fn=collate_batch, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=args.device == "cuda")
    torch.manual_seed(0)
    model = get_method(method)(cfg=method_cfg, encoder=encoder, in_channels=cache.data.shape[1], fs=cache.fs,
                               encoder_args=encoder_args)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = StepTimer(args.warmup, GpuSampler(), device)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, accelerator="gpu" if args.device == "cuda" else "cpu",
                        devices=1, precision=args.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, loader)
    utilisation = timer.sampler.stop()
    timed = steps - args.warmup
    return {"workers": workers, "steps": steps, "batch": batch, "samples_per_s": timed * batch / timer.seconds,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "gpu_util": utilisation}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, nargs="+", default=None, help="stores to pretrain on (a pool: several)")
    parser.add_argument("--demo-records", type=int, default=None, help="write and convert a PTB-XL demo tree")
    parser.add_argument("--records", type=int, default=21799, help="records of the synthetic store (no --store)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 8], help="DataLoader workers to time")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=("32-true", "16-mixed", "bf16-mixed"))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument("--steps", type=int, default=None, help="at most this many steps per epoch")
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed at the start of each epoch")
    parser.add_argument("--cache", choices=("ram", "memmap"), default="ram")
    parser.add_argument("--workdir", type=Path, default=None, help="where the synthetic store goes (kept)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    config = load_config(args.config)
    if args.method not in config["pretrain"]["methods"]:
        raise SystemExit(f"{args.config}: no pretrain.methods.{args.method}")

    print(machine_info())
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name(0)}, precision {args.precision}")
    else:
        print(f"device: cpu, precision {args.precision}, torch threads {torch.get_num_threads()}")
    own = args.workdir is None and args.store is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_pretrain-")) if own else args.workdir
    try:
        if args.store is None and args.demo_records:
            from physiossl.data.ecg.sources import ptbxl

            store = workdir / f"ptbxl_demo_{args.demo_records}.zarr"
            if not store.is_dir():
                started = time.perf_counter()
                raw = ptbxl.demo(workdir / f"ptbxl_demo_{args.demo_records}", n_records=args.demo_records, seed=0)
                ptbxl.convert(raw, store, fs=int(FS), progress=False)
                print(f"demo store: {args.demo_records} PTB-XL demo records written and converted in "
                      f"{time.perf_counter() - started:.1f} s")
            stores = [store]
        elif args.store is None:
            store = workdir / f"synthetic_{args.records}.zarr"
            if not store.is_dir():
                started = time.perf_counter()
                synthetic_store(store, args.records)
                print(f"synthetic store: {args.records} records written in {time.perf_counter() - started:.1f} s")
            stores = [store]
        else:
            stores = args.store
        started = time.perf_counter()
        cache = SignalCache(stores, folds=config["pretrain"]["folds"], mode=args.cache)
        filled = time.perf_counter() - started
        print(f"pool: {len(cache)} records of folds {config['pretrain']['folds']} from "
              f"{', '.join(str(s) for s in stores)}; cache ({args.cache}) filled in {filled:.1f} s")
        print(f"method {args.method}, config {args.config}")
        print(f"{'workers':>7s} {'steps':>6s} {'batch':>6s} {'samples/s':>10s} {'peak GPU MiB':>13s} "
              f"{'GPU util %':>11s}")
        rows = []
        for workers in args.workers:
            row = one_epoch(config, args.method, cache, workers, args)
            rows.append(row)
            mem = "n/a" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
            util = "n/a" if row["gpu_util"] is None else f"{row['gpu_util']:.0f}"
            print(f"{workers:7d} {row['steps']:6d} {row['batch']:6d} {row['samples_per_s']:10.1f} {mem:>13s} "
                  f"{util:>11s}", flush=True)
        base = next((r for r in rows if r["workers"] == 0), rows[0])
        for row in rows:
            print(f"ratio workers={row['workers']}/workers={base['workers']}: "
                  f"{row['samples_per_s'] / base['samples_per_s']:.2f}x")
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
