"""Pretraining stage: a method on random crops of the pretraining folds of one store or of a pool of
stores, with the evaluation's held-out records excluded → ``encoder.pt`` (+ ``encoder.json``).

Lightning checkpoints go to ``<out dir>/lightning/checkpoints`` every epoch, with the states of the random number
generators; a rerun with the same configuration and stores resumes from ``last.ckpt``, a rerun with anything
changed starts afresh.

The online probe (``pretrain.trainer.online_probe``, a label set; default ``all``) trains a linear head on the
encoder's detached embeddings during pretraining (:class:`physiossl.methods.base.OnlineProbe`), on the classes of
that label set of the evaluation store, with the labels of the pool's records whose store has them all; its loss
and macro AUC per epoch go to the training log and the last epoch's to the summary. The encoder is the same with or
without it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import DEFAULT_LOGGER
from ..data.ecg.loading import CropDataset, RandomCrops, SignalCache, collate_batch
from ..data.ecg.store import open_store
from ..methods import get_method
from .common import fingerprint, metrics_csv, resumable_training, resume_fields, save_torch_atomic, write_json

log = logging.getLogger(__name__)

#: the label set of the online probe when ``pretrain.trainer.online_probe`` is not given (every ECG store has one)
DEFAULT_ONLINE_PROBE = "all"


def held_out_records(eval_store: Path, folds: list[int]) -> tuple[str, set[str]]:
    """The dataset name and record ids of an evaluation store's held-out (validation and test) folds."""
    root = open_store(eval_store)
    ids = root["meta/record_id"][:][np.isin(root["meta/fold"][:], folds)]
    return root.attrs["dataset"], set(ids.tolist())


def probe_labels(cache: SignalCache, eval_store: Path, label_set: str) -> np.ndarray | None:
    """Targets of the online probe, (n records, K) float32 in the order of ``cache``: the K classes of
    ``labels/<label_set>`` of the evaluation store, taken from every store of the pool whose own ``labels/<label_set>``
    holds all of them; NaN rows for the records of the other stores. None when no record has them (or the
    evaluation store has no such label set)."""
    key = f"labels/{label_set}"
    eval_root = open_store(eval_store)
    if key not in eval_root:
        return None
    classes = list(eval_root[key].attrs["classes"])
    blocks = []
    for part in cache.parts:
        block = np.full((len(part.index), len(classes)), np.nan, np.float32)
        have = list(part.root[key].attrs["classes"]) if key in part.root else []
        if classes and set(classes) <= set(have):
            block[:] = part.root[key][:][part.index][:, [have.index(c) for c in classes]]
        blocks.append(block)
    labels = np.concatenate(blocks)
    return None if np.isnan(labels).all() else labels


def method_encoder(pretrain: dict, method_cfg: dict) -> tuple[str, dict]:
    """The encoder a method trains and its constructor arguments: the method's own ``encoder``/``encoder_args``,
    else ``pretrain.encoder`` with ``pretrain.encoder_args`` (which apply only to that encoder)."""
    encoder = method_cfg.get("encoder", pretrain["encoder"])
    if "encoder_args" in method_cfg:
        return encoder, dict(method_cfg["encoder_args"])
    return encoder, dict(pretrain.get("encoder_args", {})) if encoder == pretrain["encoder"] else {}


def run(view: dict, method: str, stores: list[Path], eval_store: Path, out: Path) -> dict:
    """Pretrain ``method`` on the pretraining folds of ``stores`` (one store or the members of a pool).

    Leakage guard: the validation and test records of the evaluation store are excluded from every store
    of the pool, by record id in the evaluation dataset's own store and through ``xref/<dataset>`` in
    the others; the counts are logged and recorded in the summary and the checkpoint.
    ``view`` is the pretrain stage's config view (see :func:`physiossl.config.stage_view`).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    p, trainer_cfg = view["pretrain"], view["pretrain"]["trainer"]
    out = Path(out)
    started = time.time()
    L.seed_everything(view["seed"], workers=True, verbose=False)
    ev = view["evaluate"]
    held_out_folds = [ev["val_fold"], ev["test_fold"]]
    eval_dataset, held_out = held_out_records(eval_store, held_out_folds)
    cache = SignalCache(stores, folds=p["folds"], mode=p["cache"], exclude={eval_dataset: held_out})
    leakage = {"evaluation_dataset": eval_dataset, "held_out_folds": held_out_folds,
               "held_out_records": len(held_out), "excluded_per_store": cache.excluded,
               "pretraining_records": len(cache)}
    log.info("leakage guard: %d held-out %s records (folds %s); excluded from the pool: %s",
             len(held_out), eval_dataset, held_out_folds, cache.excluded)
    method_cfg = p["methods"][method]
    encoder, encoder_args = method_encoder(p, method_cfg)
    crop = int(round(method_cfg.get("crop_s", p["crop_s"]) * cache.fs))
    probe_set = trainer_cfg.get("online_probe", DEFAULT_ONLINE_PROBE)
    labels = probe_labels(cache, eval_store, probe_set) if probe_set else None
    labelled = 0 if labels is None else int((~np.isnan(labels).any(axis=1)).sum())
    if labels is not None:
        log.info("online probe on the %d classes of label set %r: %d of %d pretraining records labelled",
                 labels.shape[1], probe_set, labelled, len(cache))
    elif probe_set:
        log.info("online probe: no pretraining record has the classes of label set %r of %s; no probe", probe_set,
                 eval_store)
    dataset = CropDataset(cache, crop, labels=labels)
    batch_size = min(method_cfg.get("batch_size", trainer_cfg["batch_size"]), len(dataset))
    # the order and the crops come from their own generator, drawn in this process (see RandomCrops); the loader's
    # generator only seeds its worker processes, which draw nothing: neither touches torch's global generator,
    # which the augmentations use
    crops = torch.Generator().manual_seed(view["seed"])
    loader = DataLoader(dataset, batch_size=batch_size, sampler=RandomCrops(len(dataset), crops), drop_last=True,
                        collate_fn=collate_batch, num_workers=trainer_cfg["num_workers"],
                        persistent_workers=trainer_cfg["num_workers"] > 0,
                        generator=torch.Generator().manual_seed(view["seed"]))
    model = get_method(method)(cfg=method_cfg, encoder=encoder, in_channels=cache.data.shape[1], fs=cache.fs,
                               encoder_args=encoder_args, probe_classes=0 if labels is None else labels.shape[1],
                               probe_seed=view["seed"])

    workdir = out.parent / "lightning"
    run_id = fingerprint(view, method,
                         [(str(part.path.resolve()), part.attrs.get("created_at")) for part in cache.parts])
    options, resume = resumable_training(workdir, run_id, trainer_cfg.get("logger", DEFAULT_LOGGER),
                                         run_name=f"pretrain {method}", generators={"crops": crops})
    trainer = L.Trainer(
        max_epochs=trainer_cfg["max_epochs"], accelerator=trainer_cfg["accelerator"], devices=trainer_cfg["devices"],
        precision=trainer_cfg["precision"], log_every_n_steps=trainer_cfg["log_every_n_steps"], **options)
    trainer.fit(model, loader, ckpt_path=resume, weights_only=True)

    metrics = trainer.callback_metrics
    probe = None if labels is None else {
        "label_set": probe_set, "n_classes": labels.shape[1], "labelled_records": labelled,
        "final_probe_loss": float(metrics.get("probe_loss", float("nan"))),
        "final_probe_auroc": float(metrics.get("probe_auroc", float("nan"))),
    }
    summary = {
        "method": method, "encoder": encoder, "encoder_args": encoder_args, "batch_size": batch_size,
        "stores": [str(s) for s in stores], "folds": p["folds"], "world_size": trainer.world_size,
        "n_records": len(dataset), "crop_samples": crop, "epochs": trainer.current_epoch,
        "steps": trainer.global_step, "final_train_loss": float(metrics.get("train_loss_epoch", float("nan"))),
        **resume_fields(resume), "seconds": round(time.time() - started, 1), "run_id": run_id,
        "metrics_csv": metrics_csv(options["logger"]), "leakage": leakage, "online_probe": probe,
    }
    if not trainer.is_global_zero:  # under DDP, one process writes the outputs
        return summary
    payload = {
        "encoder": encoder, "encoder_args": encoder_args, "method": method, "state_dict": model.encoder.state_dict(),
        "in_channels": cache.data.shape[1], "fs": cache.fs, "crop": crop, "run_id": run_id, "leakage": leakage,
    }
    heads = model.exported_heads()
    if heads:
        payload["heads"] = {name: head.state_dict() for name, head in heads.items()}
    save_torch_atomic(payload, out)
    write_json(out.with_suffix(".json"), summary)
    return summary
