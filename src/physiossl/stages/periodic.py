"""Periodic-target evaluation stage (SimPer's protocols): one protocol on one (pretrained or randomly initialised)
encoder for a target of the evaluation store (``targets/<name>``, e.g. ``heart_rate``) → one JSON result and the
test predictions (``.npz``: targets, predictions, bootstrap resampling ids, record ids, zero-shot regions).

Protocols:

- ``linear``: a linear regressor on frozen window embeddings (optionally on a label fraction), MAE / RMSE /
  Pearson r of the records' mean window predictions.
- ``finetune``: encoder and regressor trained together (a random-init encoder makes the supervised regressor).
- ``fft``: no labels; the target read from the dominant frequency of each record's feature series
  (:mod:`physiossl.eval.frequency`) times ``units_per_hz`` (60 for beats per minute).
- ``zero_shot``: the linear regressor trained and selected only on records whose target is at most
  ``train_max`` and outside the held-out band ``hold_out``; tested on the test records inside that band
  (interpolation), above ``train_max`` (extrapolation) and on the rest (seen range).

Records whose target is NaN (not derivable) are left out of every split and counted in the result. The protocols
that train resume from their last checkpoint as in :mod:`physiossl.stages.evaluate`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import numpy as np

from ..config import ALL_LABELS
from ..data.ecg.loading import SignalCache
from ..eval.bootstrap import bootstrap_ids, mae_ci
from ..eval.frequency import head_projection, principal_projection, read_frequencies
from ..eval.metrics import regression_metrics
from ..eval.protocols import Split, Task, regression
from .common import fingerprint, resolve_device, write_json
from .evaluate import (
    load_encoder,
    protocol_settings,
    random_encoder_args,
    run_inputs,
    save_npz,
    subset_description,
    train_protocol,
    training_subset,
)

log = logging.getLogger(__name__)
PROTOCOLS = ("linear", "finetune", "fft", "zero_shot")
REGIONS = ("seen", "interpolation", "extrapolation")


def with_target(cache: SignalCache, target: str) -> tuple[SignalCache, np.ndarray, int]:
    """The records of ``cache`` that have a finite target, their targets, and how many were left out."""
    values = cache.targets(target)
    keep = np.isfinite(values)
    return (cache if keep.all() else cache.subset(np.flatnonzero(keep))), values[keep], int((~keep).sum())


def zero_shot_region(values: np.ndarray, hold_out: list[float], train_max: float) -> np.ndarray:
    """Per record: ``interpolation`` (hold_out[0] <= value <= hold_out[1]), ``extrapolation`` (value >
    train_max) or ``seen`` (the training range)."""
    region = np.full(len(values), "seen", dtype="U13")
    region[(values >= hold_out[0]) & (values <= hold_out[1])] = "interpolation"
    region[values > train_max] = "extrapolation"
    return region


def run(view: dict, method: str, protocol: str, store: Path, out: Path, checkpoint: Path | None = None,
        subset: str = ALL_LABELS, random_encoder: str | None = None) -> dict:
    """``random_encoder``: the encoder of a random-initialisation baseline (no checkpoint)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown periodic protocol {protocol!r} (valid: {', '.join(PROTOCOLS)})")
    if (random_encoder is None) == (checkpoint is None):
        raise ValueError(f"method {method!r}: give a checkpoint or a random-init encoder, exactly one of them")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS, for exact resumes on GPUs
    ev, pe = view["evaluate"], view["periodic"]
    target = pe["target"]
    started = time.time()
    L.seed_everything(view["seed"], verbose=False)
    splits = {"train": ev["train_folds"], "val": [ev["val_fold"]], "test": [ev["test_fold"]]}
    caches, values, missing = {}, {}, {}
    for name, folds in splits.items():
        cache = SignalCache(store, folds=folds)
        if name == "train":
            cache = training_subset(cache, ev["train_folds"], subset, view["seed"], store)
        caches[name], values[name], missing[name] = with_target(cache, target)
    region = zero_shot_region(values["test"], pe["zero_shot"]["hold_out"], pe["zero_shot"]["train_max"]) \
        if protocol == "zero_shot" else None
    if protocol == "zero_shot":
        for name in ("train", "val"):
            seen = zero_shot_region(values[name], pe["zero_shot"]["hold_out"], pe["zero_shot"]["train_max"]) == "seen"
            caches[name], values[name] = caches[name].subset(np.flatnonzero(seen)), values[name][seen]
    for name, cache in caches.items():
        if len(cache) == 0:
            raise ValueError(f"{store}: no {name} record with a finite target {target!r} "
                             f"(folds {splits[name]}, subset {subset}, protocol {protocol})")

    device = resolve_device(view["pretrain"]["trainer"]["accelerator"])
    encoder, origin, heads = load_encoder(checkpoint, random_encoder, caches["train"].data.shape[1],
                                          random_encoder_args(view, random_encoder))
    cfg, extra, training = {}, {}, {}
    if protocol == "fft":
        scale = float(pe["units_per_hz"])
        band_hz = [float(b) / scale for b in pe["band"]]
        if "series" in heads:
            project, extra["series"] = head_projection(heads["series"]), "trained series head"
        else:
            project = principal_projection(encoder, caches["train"], device, ev["batch_size"])
            extra["series"] = "first principal component of the training records' frame features"
        scores = {}
        for name in ("val", "test"):
            freqs, fs_series = read_frequencies(encoder, project, caches[name], band_hz, device, ev["batch_size"])
            scores[name] = freqs * scale
        extra.update(series_fs_hz=fs_series, band_searched_hz=[band_hz[0], min(band_hz[1], fs_series / 2)])
        result = {"val": regression_metrics(values["val"], scores["val"]),
                  "test": regression_metrics(values["test"], scores["test"]), "test_scores": scores["test"],
                  "best_epoch": None, "history": []}
    else:
        cfg = protocol_settings(pe, "linear" if protocol == "zero_shot" else protocol, method)
        labels = {name: v[:, None].astype(np.float32) for name, v in values.items()}
        task = Task(**{name: Split(caches[name], labels[name]) for name in splits}, classes=[target],
                    window=int(round(ev["window_s"] * caches["train"].fs)),
                    stride=int(round(ev["stride_s"] * caches["train"].fs)), aggregate=ev["aggregate"],
                    batch_size=ev["batch_size"], objective=regression(labels["train"]))
        run_id = fingerprint(view, method, protocol, subset, random_encoder, run_inputs(store, checkpoint))
        result, training = train_protocol(view, "finetune" if protocol == "finetune" else "linear", encoder, task, cfg,
                                          device, out, run_id)
    predictions = np.asarray(result["test_scores"], dtype=np.float64).reshape(-1)

    level, n_boot = ev["bootstrap"]["level"], ev["bootstrap"]["n"]
    ids = bootstrap_ids(len(caches["test"]), n_boot, view["seed"])
    regions = {}
    if region is not None:
        for k, name in enumerate(REGIONS):
            rows = np.flatnonzero(region == name)
            if len(rows):
                sub_ids = bootstrap_ids(len(rows), n_boot, view["seed"] + 1 + k)
                regions[name] = {**regression_metrics(values["test"][rows], predictions[rows]),
                                 "mae_ci": mae_ci(values["test"][rows], predictions[rows], sub_ids, level)}
            else:
                regions[name] = {"n": 0}
    npz = Path(out).with_suffix(".npz")
    save_npz(npz, y_true=values["test"], y_pred=predictions, bootstrap_ids=ids,
             record_id=np.array(caches["test"].record_ids.tolist(), dtype="U"),
             region=region if region is not None else np.full(len(predictions), "", dtype="U1"))
    summary = {
        "method": method, "protocol": protocol, "target": target, "units": pe.get("units", ""),
        "dataset": caches["train"].attrs["dataset"], "store": str(store),
        "subset": subset_description(subset, len(caches["train"])), "seed": view["seed"],
        "folds": {"train": ev["train_folds"], "val": ev["val_fold"], "test": ev["test_fold"]},
        "n_records": {name: len(cache) for name, cache in caches.items()},
        "n_without_target": missing,
        "test_mae": result["test"]["mae"], "test_ci": mae_ci(values["test"], predictions, ids, level),
        "test": result["test"], "val": result["val"], "zero_shot": regions,
        **({"zero_shot_split": pe["zero_shot"]} if protocol == "zero_shot" else {}),
        "predictions": npz.name, "best_epoch": result["best_epoch"], "history": result["history"], "config": cfg,
        **extra, "device": device.type, "seconds": round(time.time() - started, 1), **origin, **training,
    }
    write_json(Path(out), summary)
    log.info("%s/%s/%s (%s): test MAE %.3f [%.3f, %.3f], r %.3f", method, protocol, subset, target,
             summary["test_mae"], summary["test_ci"]["low"], summary["test_ci"]["high"],
             result["test"]["pearson_r"])
    return summary


__all__ = ["PROTOCOLS", "REGIONS", "run", "with_target", "zero_shot_region"]
