"""Evaluation stage: one protocol on one (pretrained or randomly initialised) encoder and one training subset
→ one JSON result and the test predictions (``.npz``: labels, scores and the bootstrap resampling ids).

The protocol checkpoints every epoch to ``<out>.lightning/checkpoints`` (next to the result); a rerun with the same
configuration, store, encoder and package code resumes from ``last.ckpt`` and writes the result of an uninterrupted
run, a rerun with anything changed starts afresh.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..config import ALL_LABELS, DEFAULT_LOGGER
from ..data.ecg.loading import SignalCache
from ..data.ecg.store import open_store
from ..data.files import atomic_file, sha256_file
from ..eval.bootstrap import bootstrap_ids, macro_auc_ci
from ..eval.protocols import Split, Task, finetune, linear_eval
from ..eval.robustness import robustness_curve
from ..models import build_encoder
from .common import fingerprint, metrics_csv, resolve_device, resumable_training, resume_fields, write_json

log = logging.getLogger(__name__)


def load_encoder(checkpoint: Path | None, encoder_name: str | None, in_channels: int,
                 encoder_args: dict | None = None) -> tuple[torch.nn.Module, dict, dict]:
    """The pretrained encoder of ``checkpoint``, or a randomly initialised ``encoder_name`` built with
    ``encoder_args``; with a description for the result file and the heads saved with the encoder (e.g. SimPer's
    series head: name → state dict)."""
    if checkpoint is None:
        encoder_args = dict(encoder_args or {})
        origin = {"encoder": encoder_name, "init": "random", **({"encoder_args": encoder_args} if encoder_args else {})}
        return build_encoder(encoder_name, in_channels, **encoder_args), origin, {}
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    encoder = build_encoder(payload["encoder"], payload["in_channels"], **payload.get("encoder_args", {}))
    encoder.load_state_dict(payload["state_dict"])
    return encoder, {"encoder": payload["encoder"], "init": str(checkpoint), "pretrain_run_id": payload["run_id"],
                     "pretrain_leakage": payload.get("leakage")}, payload.get("heads", {})


def random_encoder_args(view: dict, random_encoder: str | None) -> dict:
    """``pretrain.encoder_args`` for a random-init baseline of ``pretrain.encoder`` (none for other encoders)."""
    pretrain = view["pretrain"]
    return dict(pretrain.get("encoder_args", {})) if random_encoder == pretrain["encoder"] else {}


def run_inputs(store: Path, checkpoint: Path | None) -> list:
    """What besides the config identifies an evaluation run: the store (path, creation time) and the encoder file's
    SHA-256 (none for a random-init baseline)."""
    return [str(Path(store).resolve()), open_store(store).attrs.get("created_at"),
            sha256_file(checkpoint) if checkpoint is not None else None]


def train_protocol(view: dict, protocol: str, encoder: torch.nn.Module, task: Task, cfg: dict, device: torch.device,
                   out: Path, run_id: str) -> tuple[dict, dict]:
    """Linear evaluation (``linear``) or fine-tuning (``finetune``) of ``encoder`` on ``task``, resumable under
    ``<out>.lightning``; the protocol's result and the run's fields of the result file."""
    trainer = view["pretrain"]["trainer"]
    workdir = Path(out).with_suffix(".lightning")
    options, resume = resumable_training(workdir, run_id, trainer.get("logger", DEFAULT_LOGGER),
                                         run_name=str(Path(out).with_suffix("")))
    if protocol == "linear":
        result = linear_eval(encoder, task, cfg, device, view["seed"], trainer_options=options, ckpt_path=resume)
    elif protocol == "finetune":
        precision = trainer["precision"] if device.type == "cuda" else "32-true"
        result = finetune(encoder, task, cfg, device, view["seed"], crop=task.window, precision=precision,
                          trainer_options=options, ckpt_path=resume)
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return result, {**resume_fields(resume), "run_id": run_id, "metrics_csv": metrics_csv(options["logger"])}


def protocol_settings(ev: dict, protocol: str, method: str) -> dict:
    """The protocol's settings with the method's overrides applied."""
    cfg = {k: v for k, v in ev[protocol].items() if k != "overrides"}
    return {**cfg, **ev[protocol].get("overrides", {}).get(method, {})}


def training_subset(cache: SignalCache, train_folds: list[int], subset: str, seed: int, store: Path) -> SignalCache:
    """``all``; ``frac<f>``: the first round(f * n) records of one seeded permutation of the training records (nested
    subsets, the same for every method); ``folds<k>``: the records of the first k training folds."""
    if subset == ALL_LABELS:
        return cache
    if subset.startswith("frac"):
        fraction = float(subset[4:])
        n = max(1, int(round(fraction * len(cache))))
        order = np.random.default_rng(seed).permutation(len(cache))
        return cache.subset(np.sort(order[:n]))
    if subset.startswith("folds"):
        return SignalCache(store, folds=sorted(train_folds)[:int(subset[5:])])
    raise ValueError(f"unknown training subset {subset!r} (all, frac<f>, folds<k>)")


#: how records and classes of a label set are chosen (``evaluate.label_convention``; the first is the default):
#: ``training_positives`` keeps every record (an empty label set is an all-negative row) and scores the classes
#: with positives in the training folds; ``ptbxl_benchmark`` follows the PTB-XL benchmark (Strodthoff et al.
#: 2021, its ``select_data``): records with an empty label set are dropped from every split and the classes are
#: those present in the data (any of the training, validation and test folds).
LABEL_CONVENTIONS = ("training_positives", "ptbxl_benchmark")


def select_labels(caches: dict[str, SignalCache], label_set: str, convention: str
                  ) -> tuple[dict[str, SignalCache], np.ndarray, list[str]]:
    """The splits' caches after the convention's record selection, the mask of the label set's classes that are
    scored and all its classes."""
    labels = {name: cache.labels(label_set)[0] for name, cache in caches.items()}
    classes = caches["train"].labels(label_set)[1]
    if convention == "training_positives":
        return caches, labels["train"].sum(axis=0) > 0, classes
    if convention != "ptbxl_benchmark":
        raise ValueError(f"unknown evaluate.label_convention {convention!r} (one of {', '.join(LABEL_CONVENTIONS)})")
    kept = {name: cache if labels[name].any(axis=1).all() else cache.subset(np.flatnonzero(labels[name].any(axis=1)))
            for name, cache in caches.items()}
    present = np.logical_or.reduce([labels[name].any(axis=0) for name in caches])
    return kept, present, classes


def run(view: dict, method: str, protocol: str, store: Path, out: Path, checkpoint: Path | None = None,
        subset: str = ALL_LABELS, random_encoder: str | None = None) -> dict:
    """``random_encoder``: the encoder of a random-initialisation baseline (no checkpoint)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS, for exact resumes on GPUs
    ev = view["evaluate"]
    started = time.time()
    L.seed_everything(view["seed"], verbose=False)
    if (random_encoder is None) == (checkpoint is None):
        raise ValueError(f"method {method!r}: give a checkpoint or a random-init encoder, exactly one of them")
    splits = {"train": ev["train_folds"], "val": [ev["val_fold"]], "test": [ev["test_fold"]]}
    caches = {name: SignalCache(store, folds=folds) for name, folds in splits.items()}
    convention = ev.get("label_convention", LABEL_CONVENTIONS[0])
    caches, trained, all_classes = select_labels(caches, ev["label_set"], convention)
    classes = [c for c, keep in zip(all_classes, trained) if keep]
    untrainable = [c for c, keep in zip(all_classes, trained) if not keep]
    if not classes:
        raise ValueError(f"{store}: label set {ev['label_set']!r} has no positives in folds {ev['train_folds']}")
    caches["train"] = training_subset(caches["train"], ev["train_folds"], subset, view["seed"], store)
    labels = {name: cache.labels(ev["label_set"])[0][:, trained] for name, cache in caches.items()}
    fs = caches["train"].fs
    task = Task(**{name: Split(caches[name], labels[name]) for name in splits}, classes=classes,
                window=int(round(ev["window_s"] * fs)), stride=int(round(ev["stride_s"] * fs)),
                aggregate=ev["aggregate"], batch_size=ev["batch_size"])
    device = resolve_device(view["pretrain"]["trainer"]["accelerator"])
    encoder, origin, _ = load_encoder(checkpoint, random_encoder, caches["train"].data.shape[1],
                                      random_encoder_args(view, random_encoder))
    cfg = protocol_settings(ev, protocol, method)
    run_id = fingerprint(view, method, protocol, subset, random_encoder, run_inputs(store, checkpoint))
    result, training = train_protocol(view, protocol, encoder, task, cfg, device, out, run_id)

    ids = bootstrap_ids(len(caches["test"]), ev["bootstrap"]["n"], view["seed"])
    ci = macro_auc_ci(labels["test"], result["test_scores"], ids, level=ev["bootstrap"]["level"])
    robustness = []
    if subset == ALL_LABELS and "robustness" in ev:
        rb = ev["robustness"]
        robustness = robustness_curve(result["predict"], task.test, classes, rb["noise"], rb["levels"], view["seed"])
    predictions = Path(out).with_suffix(".npz")
    save_npz(predictions, y_true=labels["test"], y_score=result["test_scores"], bootstrap_ids=ids,
              record_id=np.array(caches["test"].record_ids.tolist(), dtype="U"), classes=np.array(classes, dtype="U"))
    summary = {
        "method": method, "protocol": protocol, "dataset": caches["train"].attrs["dataset"], "store": str(store),
        "subset": subset_description(subset, len(caches["train"])),
        "label_set": ev["label_set"], "label_convention": convention, "aggregate": ev["aggregate"],
        "seed": view["seed"],
        "folds": {"train": ev["train_folds"], "val": ev["val_fold"], "test": ev["test_fold"]},
        "n_records": {name: len(cache) for name, cache in caches.items()},
        "classes": classes, "classes_without_training_positives": untrainable,
        "test_macro_auc": result["test"]["macro_auc"], "val_macro_auc": result["val"]["macro_auc"],
        "test_ci": ci, "robustness": robustness, "predictions": predictions.name,
        "best_epoch": result["best_epoch"], "test": result["test"], "val": result["val"], "history": result["history"],
        "config": cfg, "device": device.type, "seconds": round(time.time() - started, 1), **origin, **training,
    }
    write_json(Path(out), summary)
    log.info("%s/%s/%s: test macro AUC %.4f [%.4f, %.4f] (best epoch %d)", method, protocol, subset,
             summary["test_macro_auc"], ci["low"], ci["high"], summary["best_epoch"])
    return summary


def subset_description(subset: str, n_train_records: int) -> dict:
    kind = "all" if subset == ALL_LABELS else "fraction" if subset.startswith("frac") else "folds"
    value = None if kind == "all" else float(subset[4:]) if kind == "fraction" else int(subset[5:])
    return {"name": subset, "kind": kind, "value": value, "n_train_records": n_train_records}


def save_npz(path: Path, **arrays) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:   # a file object: NumPy appends no suffix
        np.savez_compressed(fh, **arrays)


__all__ = ["LABEL_CONVENTIONS", "run", "load_encoder", "select_labels", "protocol_settings", "random_encoder_args",
           "run_inputs", "save_npz", "subset_description", "train_protocol", "training_subset"]
