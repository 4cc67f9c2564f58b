#!/usr/bin/env python
"""Training-step throughput of every SSL method (samples/s: views, forward, backward and optimiser step, plus
the method's per-step hooks such as EMA and queue updates), against supervised training of the same encoder
(xresnet1d50 + linear head, BCE on 71 classes, AdamW) measured in the same run. Every optimiser is built by
``physiossl.optim.adam`` (fused kernels on CUDA, the for-loop on CPU).

    python benchmarks/bench_methods.py [--config config/paper_ecg.yaml] [--batch 64] [--steps 10] [--warmup 3]
                                       [--device cpu|cuda] [--precision 32-true|16-mixed|bf16-mixed]

Each method is built from ``pretrain.methods`` of --config (the paper's heads and hyperparameters by default)
and trained through a Lightning Trainer on random (batch, 12, crop) tensors held in memory, so the data path
does not count. The crop is the method's ``crop_s`` (else ``pretrain.crop_s``) at 100 Hz: 250 samples, and
1000 for CPC and APC (10 s in the paper). The ratio divides a method's samples/s by the supervised baseline's
(3 significant digits at least).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import machine_info  # noqa: E402
from physiossl.config import validate_config  # noqa: E402
from physiossl.methods import available, get_method  # noqa: E402
from physiossl.models import build_encoder  # noqa: E402
from physiossl.optim import adam  # noqa: E402
from physiossl.stages.pretrain import method_encoder  # noqa: E402

FS = 100.0
N_CLASSES = 71


class RandomBatches(Dataset):
    """``n`` pre-generated batches; the DataLoader hands them over as they are (batch_size=None)."""

    def __init__(self, n: int, batch: int, crop: int, labels: bool = False):
        generator = torch.Generator().manual_seed(0)
        self.x = [torch.randn(batch, 12, crop, generator=generator) for _ in range(min(n, 4))]
        self.y = [(torch.rand(batch, N_CLASSES, generator=generator) < 0.1).float() for _ in self.x] if labels else None
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x = self.x[i % len(self.x)]
        return x if self.y is None else (x, self.y[i % len(self.y)])


class Supervised(L.LightningModule):
    """The baseline: supervised multi-label training of the encoder with a linear head."""

    def __init__(self, encoder: str, encoder_args: dict | None = None):
        super().__init__()
        self.encoder = build_encoder(encoder, **(encoder_args or {}))
        self.head = nn.Linear(self.encoder.out_dim, N_CLASSES)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self.head(self.encoder(x)).float(), y)

    def configure_optimizers(self):
        return adam(self.parameters(), decoupled=True, lr=1e-3, weight_decay=1e-4)


class StepTimer(Callback):
    """Wall time of the training steps after ``warmup`` steps (synchronised on CUDA)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds = warmup, None, 0.0

    def _sync(self, module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        self._sync(module)
        self.seconds = time.perf_counter() - self.start


def ratio_text(ratio: float) -> str:
    """``ratio`` with 3 decimals, more where needed for 3 significant digits (slow methods on a CPU)."""
    decimals = max(3, 2 - math.floor(math.log10(ratio))) if ratio > 0 else 3
    return f"{ratio:.{decimals}f}x"


def samples_per_s(module: L.LightningModule, batches: RandomBatches, batch: int, steps: int, warmup: int,
                  device: str, precision: str) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=device, devices=1, precision=precision,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, DataLoader(batches, batch_size=None, shuffle=False))
    return steps * batch / timer.seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path,
                        default=Path(__file__).resolve().parents[1] / "config" / "paper_ecg.yaml")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method of --config")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"])
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    config = validate_config(yaml.safe_load(args.config.read_text()), str(args.config))
    pretrain = config["pretrain"]
    methods = args.methods or [m for m in available() if m in pretrain["methods"]]
    L.seed_everything(0, verbose=False)
    print(machine_info())
    print(f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f", precision {args.precision}, batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
          f"config {args.config.name}")

    n = args.warmup + args.steps
    base_crop = int(round(pretrain["crop_s"] * FS))
    baseline = samples_per_s(Supervised(pretrain["encoder"], pretrain.get("encoder_args", {})),
                             RandomBatches(n, args.batch, base_crop, labels=True),
                             args.batch, args.steps, args.warmup, args.device, args.precision)
    print(f"{'supervised':<14} {pretrain['encoder']:<12} crop {base_crop:>5}  {baseline:9.1f} samples/s  1.00x")
    results = {"supervised": baseline}
    for name in methods:
        cfg = pretrain["methods"][name]
        crop = int(round(cfg.get("crop_s", pretrain["crop_s"]) * FS))
        encoder, encoder_args = method_encoder(pretrain, cfg)
        module = get_method(name)(cfg=cfg, encoder=encoder, fs=FS, encoder_args=encoder_args)
        rate = samples_per_s(module, RandomBatches(n, args.batch, crop), args.batch, args.steps, args.warmup,
                             args.device, args.precision)
        results[name] = rate
        print(f"{name:<14} {encoder:<12} crop {crop:>5}  {rate:9.1f} samples/s  {ratio_text(rate / baseline)}")
    print("== ratios (method samples/s / supervised samples/s, same run)")
    for name in methods:
        print(f"ratio {name}/supervised: {ratio_text(results[name] / baseline)}")
    return results


if __name__ == "__main__":
    main()
