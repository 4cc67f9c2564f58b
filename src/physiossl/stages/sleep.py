"""Sound-based sleep staging: one run of the ablation grid (variant x labeled fraction x unlabeled pool).

A run splits the scored nights of ``sleep.dataset`` by night (by the config's ``seed``, the same for every run):
test, validation, nights whose labels are never used (the in-distribution unlabeled pool) and training nights. The
first ``fraction`` of the training nights (in an order drawn from the run's seed, so that smaller fractions are
subsets of larger ones) keep their labels; the other training nights join the unlabeled pool with their labels
hidden. Pool ``ood`` adds every night of the ``sleep.unlabeled`` datasets (e.g. home recordings with
out-of-distribution noise). Runs of several seeds (``sleep.grid.seeds``) share the night split.

Variants (the paper's ablation and its baseline) are plugins of :mod:`physiossl.variants`: ``supervised``
(per-epoch cross-entropy only), ``sc`` (+ sequential consistency), ``ssc`` (+ semi-supervised contrastive),
``both`` and ``ccssl`` (FixMatch + class-aware contrastive).

An epoch of training is one pass over the labeled sequences; unlabeled sequences are drawn at random alongside.
The unlabeled side draws its augmentations and dropout from its own seeded stream, so every variant sees the same
labeled batches, augmentations and dropout masks as supervised-only training with the same seed (paired runs).
The labeled batch and the unlabeled views go through the model in separate forward passes (on the demo, one
joint pass with batch-norm statistics over both, as in FixMatch, scored lower). AdamW with a cosine decay of the
learning rate over ``max_epochs``; the unlabeled losses optionally ramp up.
The model of the epoch with the best validation kappa is evaluated on the test nights: every test epoch gets the
mean of the softmax outputs of the sequences that cover it (stride ``seq_len // 2``); metrics for the trained
class view and the coarser ones, with percentile intervals from resampling test nights.
Every epoch ends with a checkpoint in ``<out>.lightning`` that includes the states of all random streams and
loader generators; a rerun of the same run resumes from it and ends with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..augment.audio import build_audio_augment
from ..config import DEFAULT_LOGGER
from ..data.sleep.loading import (
    SequenceDataset,
    accumulate_windows,
    collate_batch,
    concat_arrays,
    load_sleep_arrays,
    normalize_nights,
    sequence_starts,
)
from ..data.sleep.stages import coarser_views, to_view
from ..data.sleep.store import open_sleep_store
from ..eval.sleep import all_views, night_bootstrap
from ..models import build_sleep_model
from ..variants import VARIANTS
from .common import fingerprint, metrics_csv, resumable_training, resume_fields, save_torch_atomic, write_json
from .evaluate import save_npz

log = logging.getLogger(__name__)

POOLS = ("none", "in", "ood")
PROJ_DIM = 128
#: Offsets from a run's seed of its random streams, each drawn on its own so that the labeled side (training loader
#: at the seed itself: batches, augmentations, dropout) is the same in every variant; the unlabeled branch seeds
#: its step ``s`` at ``seed * UNLABELED_STEP_STRIDE + s``.
STREAM = {"unlabeled_sampler": 1, "unlabeled_loader": 2, "projection_head": 3, "validation_loader": 4}
UNLABELED_STEP_STRIDE = 1_000_003
DEFAULT_STRONG = [{"time_mask": {"n": 2, "max_frac": 0.2}}, {"freq_mask": {"n": 2, "max_bins": 6}}]


def split_nights(night_ids: list[str], labeled: np.ndarray, splits: dict, seed: int) -> dict[str, list[str]]:
    """Split the scored nights by night: ``test``, ``val``, ``unlabeled`` (labels never used) and ``train``, in
    a seeded order of the sorted ids; nights stored unlabeled always go to ``unlabeled``."""
    scored = sorted(n for n, lab in zip(night_ids, labeled) if lab)
    order = [scored[i] for i in np.random.default_rng(seed).permutation(len(scored))]
    n = len(order)
    n_test, n_val = max(1, round(splits["test"] * n)), max(1, round(splits["val"] * n))
    n_unlabeled = round(splits["unlabeled"] * n)
    if n - n_test - n_val - n_unlabeled < 1:
        raise ValueError(f"{n} scored nights cannot be split into test ({n_test}), validation ({n_val}), unlabeled "
                         f"({n_unlabeled}) and at least one training night: lower sleep.splits or add nights")
    parts = np.split(np.asarray(order, dtype=object), np.cumsum([n_test, n_val, n_unlabeled]))
    out = {name: sorted(part.tolist()) for name, part in zip(("test", "val", "unlabeled", "train"), parts)}
    out["unlabeled"] = sorted(out["unlabeled"] + [n for n, lab in zip(night_ids, labeled) if not lab])
    return out


def labeled_nights(train: list[str], fraction: float, seed: int) -> list[str]:
    """The training nights that keep their labels: the first ceil(fraction x n) of a seeded order (nested)."""
    order = [sorted(train)[i] for i in np.random.default_rng(seed + 1).permutation(len(train))]
    return sorted(order[:max(1, math.ceil(fraction * len(order) - 1e-9))])


class SleepStaging(L.LightningModule):
    """A sleep-staging model trained with the losses of one variant; validation kappa selects the epoch."""

    def __init__(self, model: nn.Module, variant: str, cfg: dict, n_classes: int,
                 val_data: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0):
        super().__init__()
        self.model, self.variant, self.cfg, self.n_classes, self.seed = model, variant, cfg, n_classes, seed
        self.variant_plugin = VARIANTS.load(variant)()
        self.augment = build_audio_augment(cfg["augment"], "sleep.augment")
        self.strong = build_audio_augment(cfg.get("strong_augment", cfg["augment"] + DEFAULT_STRONG),
                                          "sleep.strong_augment")
        self.proj = None
        if VARIANTS[variant].get("projection"):
            # initialised from a stream of its own: drawing it from the global one would shift the labeled
            # augmentations and dropout away from those of supervised-only training of the same seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + STREAM["projection_head"])
                self.proj = nn.Sequential(nn.Linear(model.embed_dim, model.embed_dim), nn.ReLU(),
                                          nn.Linear(model.embed_dim, PROJ_DIM))
        self.val_data = val_data          # (window starts, true labels per epoch) of the validation nights
        self._val_windows: list[torch.Tensor] = []

    def configure_optimizers(self):
        t = self.cfg["train"]
        from ..optim import adam  # AdamW, fused kernels on CUDA
        optimizer = adam(self.parameters(), decoupled=True, lr=t["lr"], weight_decay=t["weight_decay"])
        return {"optimizer": optimizer,   # cosine decay of the learning rate over the epochs
                "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t["max_epochs"])}

    def _losses(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch["labeled"] if isinstance(batch, dict) else batch
        z_l = self.model.embed(self.augment(x))
        logits = self.model.classify(z_l)
        losses = {"ce": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)}
        if not VARIANTS[self.variant].get("unlabeled"):
            return losses
        # the unlabeled branch draws its augmentations and dropout from its own seeded stream, so that every variant
        # sees the same labeled batches, augmentations and dropout masks as supervised-only training (paired runs)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * UNLABELED_STEP_STRIDE + self.global_step)
            losses.update(self.variant_plugin.unlabeled_losses(self, batch["unlabeled"][0], z_l, y))
        return losses

    def training_step(self, batch, batch_idx):
        losses = self._losses(batch)
        ramp = self.cfg["train"].get("rampup_epochs", 0)
        if ramp:  # the unlabeled losses grow linearly over the first epochs, while the predictions are still poor
            scale = min(1.0, (self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)) / ramp)
            losses = {k: v if k == "ce" else v * scale for k, v in losses.items()}
        loss = sum(losses.values())
        bs = (batch["labeled"] if isinstance(batch, dict) else batch)[0].shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        self._val_windows.append(self.model(batch[0]).softmax(-1).float().cpu())

    def on_validation_epoch_end(self):
        starts, true = self.val_data
        probs = accumulate_windows(starts, self.cfg["seq_len"], torch.cat(self._val_windows).numpy(), len(true))
        self._val_windows.clear()
        true = np.where(np.isnan(probs).any(1), -1, true)
        metrics = all_views(true, np.nan_to_num(probs).argmax(1), self.n_classes)[str(self.n_classes)]
        self.log("val_kappa", float(metrics["kappa"]), prog_bar=True)
        self.log("val_macro_f1", float(metrics["macro_f1"]))


def _loader(dataset: SequenceDataset, batch_size: int, num_workers: int, seed: int, **kw) -> DataLoader:
    """A DataLoader with a generator of its own: a loader without one draws its base seed from the global stream
    every time it is iterated, which would tie the training augmentations and dropout to how often the other
    loaders (unlabeled, validation) are iterated."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, persistent_workers=num_workers > 0,
                      collate_fn=collate_batch, generator=torch.Generator().manual_seed(seed), **kw)


def loader_generators(loaders: DataLoader | dict[str, DataLoader],
                      val_loader: DataLoader) -> dict[str, torch.Generator]:
    """The generators of the training loaders, their samplers and the validation loader, by name (saved with the
    checkpoints)."""
    named = {"validation": val_loader, **(loaders if isinstance(loaders, dict) else {"labeled": loaders})}
    out = {}
    for name, loader in named.items():
        out[f"{name}_loader"] = loader.generator
        if getattr(loader.sampler, "generator", None) is not None and loader.sampler.generator is not loader.generator:
            out[f"{name}_sampler"] = loader.sampler.generator
    return out


@torch.no_grad()
def predict(model: nn.Module, arrays, seq_len: int, batch_size: int, device: torch.device) -> np.ndarray:
    """Per-epoch class probabilities (E, C) of every night of ``arrays``: the mean over the covering sequences."""
    starts = sequence_starts(arrays, None, seq_len, max(1, seq_len // 2))
    loader = _loader(SequenceDataset(arrays, starts, seq_len, None), batch_size, 0, 0, shuffle=False)
    model.eval().to(device)
    windows = [model(x.to(device)).softmax(-1).float().cpu() for x, _ in loader]
    return accumulate_windows(starts, seq_len, torch.cat(windows).numpy(), len(arrays.stages))


def run(view: dict, variant: str, fraction: float, pool: str, store: Path, unlabeled_stores: list[Path],
        out: Path, seed: int | None = None) -> dict:
    """Train and test one sleep-staging run; writes ``out`` (.json), its ``.npz`` test predictions and ``.pt`` model.

    ``view`` is the train_sleep stage's config view (see :func:`physiossl.config.stage_view`); its ``seed`` splits
    the nights. ``seed`` (default: the view's) is the run's: which training nights keep their labels, the
    initialisation, the augmentations and the order of the batches.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if (pool == "none") == VARIANTS[variant].get("unlabeled") or pool not in POOLS:
        raise ValueError(f"pool {pool!r} does not go with variant {variant!r}: supervised runs use pool 'none', "
                         "the others 'in' or 'ood'")
    if pool == "ood" and not unlabeled_stores:
        raise ValueError("pool 'ood' needs the stores of sleep.unlabeled (--unlabeled)")
    cfg, t = view["sleep"], view["sleep"]["train"]
    seed = view["seed"] if seed is None else int(seed)
    out, started = Path(out), time.time()
    L.seed_everything(seed, workers=True, verbose=False)
    n_classes, seq_len = cfg["n_classes"], cfg["seq_len"]

    root = open_sleep_store(store)
    night_ids = [str(n) for n in root["nights/id"][:]]
    split = split_nights(night_ids, np.asarray(root["nights/labeled"][:]), cfg["splits"], view["seed"])
    labeled = labeled_nights(split["train"], fraction, seed)
    hidden = sorted(set(split["train"]) - set(labeled))
    # float16 in RAM as in the store (a full PSG-Audio store is tens of GB); batches are float32
    train = load_sleep_arrays(store, labeled, dtype=np.float16)
    val, test = (load_sleep_arrays(store, split["val"], dtype=np.float16),
                 load_sleep_arrays(store, split["test"], dtype=np.float16))
    unlabeled = None
    if VARIANTS[variant].get("unlabeled"):
        pooled = sorted(split["unlabeled"] + hidden)
        parts = [load_sleep_arrays(store, pooled, dtype=np.float16)] if pooled else []
        if pool == "ood":
            parts += [load_sleep_arrays(s, dtype=np.float16) for s in unlabeled_stores]
        if not parts:
            raise ValueError(f"{store}: the unlabeled pool {pool!r} is empty (no unlabeled nights and no hidden "
                             "training nights at this fraction): raise sleep.splits.unlabeled or use pool 'ood'")
        unlabeled = concat_arrays(parts) if len(parts) > 1 else parts[0]
    if cfg.get("normalize", "none") == "night":
        for arrays in (train, val, test, *([unlabeled] if unlabeled is not None else [])):
            normalize_nights(arrays)
    feature = train.attrs["feature"]
    n_mels, frames = int(feature["n_mels"]), int(feature["frames"])

    stride = cfg.get("train_stride", max(1, seq_len // 2))
    train_starts = sequence_starts(train, None, seq_len, stride)
    if len(train_starts) == 0:
        raise ValueError(f"{store}: no labeled night has {seq_len} epochs (sleep.seq_len)")
    train_set = SequenceDataset(train, train_starts, seq_len, n_classes)
    batch_size = min(t["batch_size"], len(train_set))
    num_workers = t.get("num_workers", 0)
    # every loader and sampler has its own generator: the labeled batches are the same in every variant
    loader = _loader(train_set, batch_size, num_workers, seed, shuffle=True, drop_last=True)
    loaders = loader
    if unlabeled is not None:
        u_starts = sequence_starts(unlabeled, None, seq_len, stride)
        sampler = RandomSampler(range(len(u_starts)), replacement=True,
                                num_samples=len(loader) * t["unlabeled_batch_size"],
                                generator=torch.Generator().manual_seed(seed + STREAM["unlabeled_sampler"]))
        loaders = {"labeled": loader,
                   "unlabeled": _loader(SequenceDataset(unlabeled, u_starts, seq_len, None), t["unlabeled_batch_size"],
                                        num_workers, seed + STREAM["unlabeled_loader"], sampler=sampler,
                                        drop_last=True)}
    val_starts = sequence_starts(val, None, seq_len, max(1, seq_len // 2))
    val_true = to_view(val.stages, n_classes)
    val_loader = _loader(SequenceDataset(val, val_starts, seq_len, None), t["batch_size"], 0,
                         seed + STREAM["validation_loader"], shuffle=False)

    model = build_sleep_model(cfg["model"]["name"], n_mels=n_mels, frames=frames, n_classes=n_classes,
                              **cfg["model"].get("args", {}))
    module = SleepStaging(model, variant, cfg, n_classes, (val_starts, val_true), seed)

    workdir = out.with_suffix(".lightning")
    stores = [store, *(unlabeled_stores if pool == "ood" else [])]
    created = [root.attrs.get("created_with")] + [open_sleep_store(s).attrs.get("created_with") for s in stores[1:]]
    run_id = fingerprint(view, variant, fraction, pool, seed,
                         [(str(Path(s).resolve()), c) for s, c in zip(stores, created)])
    # best.ckpt: the epoch with the best validation kappa so far (last.ckpt, every epoch, is for resuming)
    best = ModelCheckpoint(dirpath=workdir / "checkpoints", filename="best", monitor="val_kappa", mode="max",
                           save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False)
    options, resume = resumable_training(workdir, run_id, t.get("logger", DEFAULT_LOGGER),
                                         run_name=str(out.with_suffix("")),
                                         generators=loader_generators(loaders, val_loader), also=(best,))
    trainer = L.Trainer(max_epochs=t["max_epochs"], accelerator=t["accelerator"], devices=1, precision=t["precision"],
                        log_every_n_steps=max(1, min(10, len(loader))), **options)
    trainer.fit(module, loaders, val_loader, ckpt_path=resume, weights_only=True)

    checkpoint = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    best_epoch = int(checkpoint["epoch"])
    device = next(module.parameters()).device if t["accelerator"] != "cpu" else torch.device("cpu")
    probs = predict(module.model, test, seq_len, t["batch_size"], device)
    val_probs = predict(module.model, val, seq_len, t["batch_size"], device)
    # epochs of nights shorter than seq_len have no prediction: left out of the metrics and counted
    covered = ~np.isnan(probs).any(1)
    true, pred = np.where(covered, to_view(test.stages, n_classes), -1), np.nan_to_num(probs).argmax(1)
    test_metrics = all_views(true, pred, n_classes)
    for n in coarser_views(n_classes):
        view_true, view_pred = to_view(true, n, n_classes), to_view(pred, n, n_classes)
        test_metrics[str(n)]["ci"] = night_bootstrap(view_true, view_pred, test.night, n, cfg["bootstrap"]["n"],
                                                     cfg["bootstrap"]["level"], seed)

    result = {
        "variant": variant, "fraction": fraction, "pool": pool, "model": cfg["model"]["name"],
        "model_args": cfg["model"].get("args", {}), "n_classes": n_classes, "seq_len": seq_len, "seed": seed,
        "split_seed": view["seed"],
        "test": test_metrics, "val": all_views(np.where(np.isnan(val_probs).any(1), -1, val_true),
                                               np.nan_to_num(val_probs).argmax(1), n_classes), "best_epoch": best_epoch,
        "epochs_trained": trainer.current_epoch, "steps": trainer.global_step, **resume_fields(resume),
        "nights": {"labeled": len(labeled), "hidden_labels": len(hidden), "unlabeled": len(unlabeled.night_ids) if
                   unlabeled is not None else 0, "val": len(split["val"]), "test": len(split["test"])},
        "epochs": {"labeled": int(len(train.stages)), "unlabeled": int(len(unlabeled.stages)) if unlabeled is not None
                   else 0, "test": int((true >= 0).sum()),
                   "test_without_prediction": int((~covered).sum())},
        "split": split, "labeled_nights": labeled, "stores": [str(s) for s in stores],
        "seconds": round(time.time() - started, 1), "run_id": run_id,
        "metrics_csv": metrics_csv(options["logger"]),
    }
    save_torch_atomic({"model": cfg["model"]["name"], "model_args": cfg["model"].get("args", {}),
                       "n_mels": n_mels, "frames": frames, "n_classes": n_classes, "seq_len": seq_len,
                       "feature": feature, "state_dict": module.model.state_dict(), "run_id": run_id},
                      out.with_suffix(".pt"))
    save_npz(out.with_suffix(".npz"), night=np.asarray([test.night_ids[i] for i in test.night]),
             index=np.asarray(test.index, dtype=np.int32), true=true.astype(np.int8), pred=pred.astype(np.int8),
             probs=probs.astype(np.float32))
    write_json(out, result)
    return result
