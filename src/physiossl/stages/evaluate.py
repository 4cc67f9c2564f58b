"""Evaluation stage: one protocol on one (pretrained or randomly initialised) encoder → one JSON result."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch

from ..config import RANDOM_INIT
from ..data.loading import SignalCache
from ..eval.protocols import Split, Task, finetune, linear_eval
from ..models import build_encoder
from .common import resolve_device, write_json

log = logging.getLogger(__name__)
_AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def load_encoder(checkpoint: Path | None, encoder_name: str, in_channels: int) -> tuple[torch.nn.Module, dict]:
    if checkpoint is None:
        return build_encoder(encoder_name, in_channels), {"encoder": encoder_name, "init": "random"}
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    encoder = build_encoder(payload["encoder"], payload["in_channels"])
    encoder.load_state_dict(payload["state_dict"])
    return encoder, {"encoder": payload["encoder"], "init": str(checkpoint), "pretrain_run_id": payload["run_id"],
                     "pretrain_leakage": payload.get("leakage")}


def run(view: dict, method: str, protocol: str, store: Path, out: Path, checkpoint: Path | None = None) -> dict:
    ev = view["evaluate"]
    started = time.time()
    L.seed_everything(view["seed"], verbose=False)
    if (method == RANDOM_INIT) != (checkpoint is None):
        raise ValueError(f"method {method!r}: a checkpoint is required exactly when the method is not {RANDOM_INIT!r}")
    splits = {"train": ev["train_folds"], "val": [ev["val_fold"]], "test": [ev["test_fold"]]}
    caches = {name: SignalCache(store, folds=folds) for name, folds in splits.items()}
    labels = {name: cache.labels(ev["label_set"]) for name, cache in caches.items()}
    all_classes = labels["train"][1]
    trained = labels["train"][0].sum(axis=0) > 0
    classes = [c for c, keep in zip(all_classes, trained) if keep]
    untrainable = [c for c, keep in zip(all_classes, trained) if not keep]
    if not classes:
        raise ValueError(f"{store}: label set {ev['label_set']!r} has no positives in folds {ev['train_folds']}")
    task = Task(
        **{name: Split(caches[name], labels[name][0][:, trained]) for name in splits},
        classes=classes, window=int(round(ev["window_s"] * caches["train"].fs)),
        stride=int(round(ev["stride_s"] * caches["train"].fs)), aggregate=ev["aggregate"], batch_size=ev["batch_size"],
    )
    device = resolve_device(view["pretrain"]["trainer"]["accelerator"])
    encoder, origin = load_encoder(checkpoint, view["pretrain"]["encoder"], caches["train"].data.shape[1])
    cfg = ev[protocol]
    if protocol == "linear":
        result = linear_eval(encoder, task, cfg, device, view["seed"])
    elif protocol == "finetune":
        autocast = _AUTOCAST.get(view["pretrain"]["trainer"]["precision"]) if device.type == "cuda" else None
        result = finetune(encoder, task, cfg, device, view["seed"], crop=int(round(view["pretrain"]["crop_s"] * caches["train"].fs)),
                          autocast_dtype=autocast)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    summary = {
        "method": method, "protocol": protocol, "dataset": caches["train"].attrs["dataset"], "store": str(store),
        "label_set": ev["label_set"], "aggregate": ev["aggregate"], "seed": view["seed"],
        "folds": {"train": ev["train_folds"], "val": ev["val_fold"], "test": ev["test_fold"]},
        "n_records": {name: len(cache) for name, cache in caches.items()},
        "classes": classes, "classes_without_training_positives": untrainable,
        "test_macro_auc": result["test"]["macro_auc"], "val_macro_auc": result["val"]["macro_auc"],
        "best_epoch": result["best_epoch"], "test": result["test"], "val": result["val"], "history": result["history"],
        "config": cfg, "device": device.type, "seconds": round(time.time() - started, 1), **origin,
    }
    write_json(Path(out), summary)
    log.info("%s/%s: test macro AUC %.4f (best epoch %d)", method, protocol, summary["test_macro_auc"], summary["best_epoch"])
    return summary


__all__ = ["run", "load_encoder"]
