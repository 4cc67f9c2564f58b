"""Epoch-level sleep-staging metrics and their bootstrap intervals over whole test nights.

Epochs whose reference stage is -1 (unscored) are left out everywhere. Conventions:

- ``per_class_f1`` is torchmetrics' per-class F1 with ``zero_division=0``: a class absent from both the reference
  and the predictions scores 0.0, as does a class that is predicted but absent from the reference.
- ``macro_f1`` averages the per-class F1 over the classes present in the reference only (listed in
  ``macro_f1_classes``), so a class the test nights do not contain neither drags the average down nor lifts it.
  torchmetrics' own ``average="macro"`` differs: it also averages in classes that are predicted but absent from
  the reference.
- ``kappa`` is Cohen's kappa (unweighted); it is NaN when the expected disagreement is zero (a single class in
  both reference and predictions).

The night bootstrap scores every resample from a confusion matrix (the sum of the resampled nights' matrices),
with the same formulas in float64; its point values equal :func:`staging_metrics` up to torchmetrics' float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from ..data.sleep.stages import UNSCORED, VIEWS, coarser_views, to_view
from .bootstrap import bootstrap_ids, percentile_ci

METRICS = ("accuracy", "kappa", "macro_f1")
NAN = float("nan")


def _scored(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scored mask, int64 labels, int64 predictions) after checking shapes and ranges."""
    if n_classes not in VIEWS:
        raise ValueError(f"no sleep-stage view with {n_classes} classes (available: {sorted(VIEWS)})")
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels and predictions differ in length: {y_true.shape} vs {y_pred.shape}")
    if ((y_true < UNSCORED) | (y_true >= n_classes)).any():
        raise ValueError(f"sleep-stage labels outside -1..{n_classes - 1}")
    scored = y_true != UNSCORED
    bad = scored & ((y_pred < 0) | (y_pred >= n_classes))
    if bad.any():
        raise ValueError(f"predictions of scored epochs outside 0..{n_classes - 1}: "
                         f"{np.unique(y_pred[bad]).tolist()}")
    return scored, y_true, y_pred


def staging_metrics(y_true, y_pred, n_classes: int) -> dict:
    """Epoch-level metrics of the ``n_classes`` view over the epochs whose label is not -1.

    Returns ``accuracy``, ``kappa`` (Cohen's), ``macro_f1`` (over ``macro_f1_classes``, the classes present in the
    reference), ``per_class_f1`` and ``support`` (by class name of ``VIEWS[n_classes]``), ``confusion`` (rows: true,
    columns: predicted, in the order of ``VIEWS``), ``n_epochs`` (scored) and ``n_unscored``. Without a scored
    epoch the scores are NaN.
    """
    scored, y_true, y_pred = _scored(y_true, y_pred, n_classes)
    names = VIEWS[n_classes]
    t = torch.as_tensor(y_true[scored])
    p = torch.as_tensor(y_pred[scored])
    support = np.bincount(y_true[scored], minlength=n_classes)
    out = {"n_epochs": int(scored.sum()), "n_unscored": int((~scored).sum()),
           "support": {name: int(s) for name, s in zip(names, support)}}
    if not len(t):
        return {"accuracy": NAN, "kappa": NAN, "macro_f1": NAN, "macro_f1_classes": [],
                "per_class_f1": {name: NAN for name in names},
                "confusion": np.zeros((n_classes, n_classes), dtype=int).tolist(), **out}
    per_class = multiclass_f1_score(p, t, num_classes=n_classes, average="none", zero_division=0).double().numpy()
    present = support > 0
    confusion = multiclass_confusion_matrix(p, t, num_classes=n_classes).numpy()
    return {
        "accuracy": float(multiclass_accuracy(p, t, num_classes=n_classes, average="micro")),
        "kappa": float(multiclass_cohen_kappa(p, t, num_classes=n_classes)),
        "macro_f1": float(per_class[present].mean()),
        "macro_f1_classes": [name for name, k in zip(names, present) if k],
        "per_class_f1": {name: float(f) for name, f in zip(names, per_class)},
        "confusion": confusion.astype(int).tolist(),
        **out,
    }


def all_views(y_true, y_pred, n_classes: int) -> dict[str, dict]:
    """:func:`staging_metrics` of the trained ``n_classes`` view and of every coarser view, keyed ``"4"``, ``"3"``
    (labels and predictions mapped with :func:`~physiossl.data.sleep.stages.to_view`)."""
    return {str(view): staging_metrics(to_view(y_true, view, from_classes=n_classes),
                                       to_view(y_pred, view, from_classes=n_classes), view)
            for view in coarser_views(n_classes)}


def confusion_metrics(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """``accuracy``, ``kappa`` and ``macro_f1`` of (..., C, C) confusion matrices (rows: true), vectorised over the
    leading axes, with the conventions of :func:`staging_metrics` (macro-F1 over the classes with true epochs in
    each matrix; NaN for an empty matrix)."""
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum(axis=(-2, -1))
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    rows, cols = cm.sum(axis=-1), cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = diag.sum(axis=-1) / total
        expected = (rows * cols).sum(axis=-1) / total
        kappa = 1.0 - (total - diag.sum(axis=-1)) / (total - expected)   # 1 − observed / expected disagreement
        denominator = rows + cols
        f1 = np.where(denominator > 0, 2 * diag / np.where(denominator > 0, denominator, 1.0), 0.0)
        present = rows > 0
        macro_f1 = (f1 * present).sum(axis=-1) / present.sum(axis=-1)
    return {"accuracy": accuracy, "kappa": kappa, "macro_f1": macro_f1}


def _night_confusions(y_true, y_pred, nights, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(night ids, (N, C, C) confusion matrix of each night with a scored epoch)."""
    scored, y_true, y_pred = _scored(y_true, y_pred, n_classes)
    nights = np.asarray(nights).reshape(-1)
    if nights.shape != y_true.shape:
        raise ValueError(f"nights and labels differ in length: {nights.shape} vs {y_true.shape}")
    ids, night = np.unique(nights[scored], return_inverse=True)
    if not len(ids):
        raise ValueError("no scored epoch to bootstrap")
    cells = (night * n_classes + y_true[scored]) * n_classes + y_pred[scored]
    counts = np.bincount(cells, minlength=len(ids) * n_classes * n_classes)
    return ids, counts.reshape(len(ids), n_classes, n_classes)


def _resampled(per_night: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, ...) sums of ``n`` resamples with replacement of the (N, ...) per-night counts (the nights drawn are
    :func:`~physiossl.eval.bootstrap.bootstrap_ids` of ``seed``)."""
    n_nights = per_night.shape[0]
    ids = bootstrap_ids(n_nights, n, seed).astype(np.int64)
    rows = np.arange(n, dtype=np.int64)[:, None] * n_nights
    weights = np.bincount((ids + rows).ravel(), minlength=n * n_nights).reshape(n, n_nights).astype(np.float64)
    return (weights @ per_night.reshape(n_nights, -1).astype(np.float64)).reshape(n, *per_night.shape[1:])


def mean_night_bootstrap(y_true, preds, nights, n_classes: int, reference=None, n: int = 1000,
                         level: float = 0.95, seed: int = 0) -> dict:
    """Accuracy, kappa and macro-F1 averaged over several runs that predicted the same test epochs (e.g. the
    seeds of one configuration), with percentile bootstrap intervals from resampling whole test nights.

    ``preds``: a sequence of S prediction arrays, each aligned with ``y_true`` and ``nights``. With ``reference``
    (S arrays, run s paired with run s), the scores are the mean over runs of the paired differences
    preds[s] − reference[s]. Epochs of one night are not independent (stages persist over minutes, and a model's
    errors cluster within a recording), so the resampling unit is the night: each resample draws as many nights as
    there are, with replacement, the same nights for every run (and its reference), and scores every run from the
    sum of the drawn nights' confusion matrices. Nights without a scored epoch are left out.

    Returns ``{metric: {"value", "per_run", "low", "high", "level", "n_bootstrap", "n_valid", "std"}}`` for
    ``accuracy``, ``kappa`` and ``macro_f1`` (``value``: the mean over runs on the full test set, ``per_run``: each
    run's value), plus ``n_nights``, ``n_runs``, ``n_bootstrap``, ``level``, ``seed`` and ``unit`` ("night").
    Resamples with an undefined metric (e.g. kappa of one class) are left out.
    """
    preds = list(preds)
    if not preds or (reference is not None and len(reference) != len(preds)):
        raise ValueError(f"need at least one run and as many references as runs, got {len(preds)} runs and "
                         f"{None if reference is None else len(reference)} references")

    def per_night(runs) -> np.ndarray:                                     # (N, S, C, C)
        return np.stack([_night_confusions(y_true, p, nights, n_classes)[1] for p in runs], axis=1)

    counts = per_night(preds)
    if reference is not None:
        counts = np.stack([per_night(reference), counts], axis=1)           # (N, 2, S, C, C): one draw for both
    point = confusion_metrics(counts.sum(axis=0))
    resampled = confusion_metrics(_resampled(counts, n, seed))
    out = {}
    for m in METRICS:
        runs, draws = point[m], resampled[m]
        if reference is not None:
            runs, draws = runs[1] - runs[0], draws[:, 1] - draws[:, 0]
        out[m] = {"value": float(runs.mean()), "per_run": [float(v) for v in runs],
                  **percentile_ci(draws.mean(axis=-1), level)}
    return {**out, "n_nights": int(counts.shape[0]), "n_runs": len(preds), "n_bootstrap": int(n),
            "level": float(level), "seed": int(seed), "unit": "night"}


def night_bootstrap(y_true, y_pred, nights, n_classes: int, n: int = 1000, level: float = 0.95,
                    seed: int = 0) -> dict:
    """Percentile bootstrap intervals of accuracy, kappa and macro-F1 of one run from resampling whole test nights
    (:func:`mean_night_bootstrap` of one run).

    Returns ``{metric: {"value", "low", "high", "level", "n_bootstrap", "n_valid", "std"}}`` for ``accuracy``,
    ``kappa`` and ``macro_f1`` (``value``: the full test set), plus ``n_nights``, ``n_bootstrap``, ``level``,
    ``seed`` and ``unit`` ("night").
    """
    out = mean_night_bootstrap(y_true, [y_pred], nights, n_classes, None, n, level, seed)
    for m in METRICS:
        del out[m]["per_run"]
    del out["n_runs"]
    return out


def paired_night_bootstrap(y_true, pred_a, pred_b, nights, n_classes: int, metric: str = "macro_f1",
                           n: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap interval of the difference b − a of ``metric`` (``accuracy``, ``kappa`` or
    ``macro_f1``) between two predictions of the same epochs, resampling whole nights (the same nights for both,
    see :func:`mean_night_bootstrap`).

    Returns ``metric``, ``a``, ``b`` and ``value`` (b − a on the full test set) with the interval fields of
    :func:`~physiossl.eval.bootstrap.percentile_ci`, ``n_nights`` and ``seed``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    diff = mean_night_bootstrap(y_true, [pred_b], nights, n_classes, [pred_a], n, level, seed)
    scores = {k: v for k, v in diff[metric].items() if k != "per_run"}
    a = confusion_metrics(_night_confusions(y_true, pred_a, nights, n_classes)[1].sum(axis=0))[metric]
    return {"metric": metric, "a": float(a), "b": float(a + scores["value"]), **scores,
            "n_nights": diff["n_nights"], "seed": int(seed)}


__all__ = ["METRICS", "all_views", "confusion_metrics", "mean_night_bootstrap", "night_bootstrap",
           "paired_night_bootstrap", "staging_metrics"]
