"""Bootstrap confidence intervals of the macro ROC AUC, paired across methods through shared resampling ids.

AUCs are Mann–Whitney statistics, U / (n_pos n_neg) with tied scores counted one half (average ranks), as in
the trapezoidal ROC AUC. A resample is a vector of record multiplicities, so each class is sorted once on the
full test set and every resample is scored from weighted cumulative sums, with no sorting per resample. Scores
are compared in float32, as :func:`physiossl.eval.metrics.macro_auc` does, so ties match the point estimate.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

_CHUNK_ELEMENTS = 1 << 21  # resamples are scored in batches of about this many record weights


def bootstrap_ids(n_records: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_records) int32 indices drawn with replacement; the same arguments give the same ids."""
    if n_records < 1 or n_bootstrap < 1:
        raise ValueError(f"bootstrap needs n_records >= 1 and n_bootstrap >= 1, got {n_records}, {n_bootstrap}")
    return np.random.default_rng(seed).integers(0, n_records, size=(n_bootstrap, n_records), dtype=np.int32)


def class_aucs(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """(K,) AUC of each class of (n, K) labels and scores, from average ranks; NaN where a class lacks positives
    or negatives."""
    y_true, y_score = _check(y_true, y_score)
    y_true = y_true.astype(np.float64)
    ranks = rankdata(y_score.astype(np.float32), method="average", axis=0)
    n_pos = y_true.sum(axis=0)
    n_neg = len(y_true) - n_pos
    u = (ranks * y_true).sum(axis=0) - n_pos * (n_pos + 1) / 2
    scorable = (n_pos > 0) & (n_neg > 0)
    return np.where(scorable, u / np.where(scorable, n_pos * n_neg, 1.0), np.nan)


def _nanmean_last(values: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(values)
    count = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def macro_auc_fast(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Macro AUC of (n, K) labels and scores over the scorable classes (NaN when none is scorable)."""
    return float(_nanmean_last(class_aucs(y_true, y_score)))


def bootstrap_class_aucs(y_true: np.ndarray, y_score: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n_bootstrap, K) per-class AUC of each resample ``y[ids[b]]``; NaN where the resample lacks positives or
    negatives of a class."""
    y_true, y_score = _check(y_true, y_score)
    ids = np.asarray(ids)
    n, n_classes = y_true.shape
    if ids.ndim != 2 or ids.size == 0 or ids.min() < 0 or ids.max() >= n:
        raise ValueError(f"ids must be (n_bootstrap, m) indices into {n} records, got shape {ids.shape}")
    positive = y_true.astype(bool)
    scores = y_score.astype(np.float32)
    order = np.argsort(scores, axis=0, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=0)
    out = np.empty((len(ids), n_classes))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, len(ids), chunk):
        batch = ids[start:start + chunk]
        rows = np.arange(len(batch))[:, None] * n
        weights = np.bincount((batch + rows).ravel(), minlength=len(batch) * n).reshape(len(batch), n).astype(float)
        n_pos = weights @ positive.astype(float)
        n_neg = weights.sum(axis=1, keepdims=True) - n_pos
        u = np.empty_like(n_pos)
        for k in range(n_classes):
            o = order[:, k]
            group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:, k] != sorted_scores[:-1, k]])
            w = weights[:, o]
            pos = np.add.reduceat(w * positive[o, k], group_starts, axis=1)
            neg = np.add.reduceat(w * ~positive[o, k], group_starts, axis=1)
            below = np.cumsum(neg, axis=1) - neg
            u[:, k] = (pos * (below + 0.5 * neg)).sum(axis=1)
        scorable = (n_pos > 0) & (n_neg > 0)
        out[start:start + len(batch)] = np.where(scorable, u / np.where(scorable, n_pos * n_neg, 1.0), np.nan)
    return out


def bootstrap_macro_aucs(y_true: np.ndarray, y_score: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n_bootstrap,) macro AUC of each resample ``y[ids[b]]``, averaged over the classes scorable in that resample
    (NaN for a resample where no class is)."""
    return _nanmean_last(bootstrap_class_aucs(y_true, y_score, ids))


def percentile_ci(values: np.ndarray, level: float = 0.95) -> dict:
    """Percentile interval of bootstrap resample values (NaN resamples left out): ``low``, ``high``, ``level``,
    ``n_bootstrap``, ``n_valid`` (resamples that enter the interval) and ``std`` (of the valid values)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(values, dtype=np.float64)
    valid = values[~np.isnan(values)]
    if len(valid):
        low, high = np.percentile(valid, [50 * (1 - level), 50 * (1 + level)])
        std = float(np.std(valid, ddof=1)) if len(valid) > 1 else 0.0
    else:
        low = high = std = float("nan")
    return {"low": float(low), "high": float(high), "level": float(level), "n_bootstrap": int(len(values)),
            "n_valid": int(len(valid)), "std": std}


def macro_auc_ci(y_true: np.ndarray, y_score: np.ndarray, ids: np.ndarray, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of the macro AUC over the resamples ``ids`` (see :func:`bootstrap_ids`);
    resamples without a scorable class are left out (see :func:`percentile_ci`)."""
    return percentile_ci(bootstrap_macro_aucs(y_true, y_score, ids), level)


def mae_ci(y_true: np.ndarray, y_pred: np.ndarray, ids: np.ndarray, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of the mean absolute error of (n,) predictions over the resamples ``ids``
    (rows of record indices); records without a finite target or prediction count as missing in every resample."""
    err = np.abs(np.asarray(y_pred, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1))
    if ids.size and ids.max() >= len(err):
        raise ValueError(f"resampling ids reach record {ids.max()}, but there are {len(err)} predictions")
    return percentile_ci(np.nanmean(err[ids], axis=1) if ids.size else np.array([]), level)


def _check(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must be (n, K) arrays of one shape, got {y_true.shape}, {y_score.shape}")
    return y_true, y_score


__all__ = ["bootstrap_class_aucs", "bootstrap_ids", "bootstrap_macro_aucs", "class_aucs", "macro_auc_ci",
           "macro_auc_fast", "mae_ci", "percentile_ci"]
