"""Multi-label metrics with explicit handling of classes that cannot be scored."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc


def macro_auc(y_true: np.ndarray, y_score: np.ndarray, classes: list[str]) -> dict:
    """Macro-averaged ROC AUC over the classes that have both positives and negatives.

    Classes without positives (or without negatives) have no defined AUC; they are left out of the
    average and listed in ``excluded`` with the reason, never silently scored as 0 or 0.5.
    """
    y_true = np.asarray(y_true)
    y_score = torch.as_tensor(np.asarray(y_score), dtype=torch.float32)
    per_class, excluded = {}, {}
    for k, name in enumerate(classes):
        positives = int(y_true[:, k].sum())
        if positives == 0:
            excluded[name] = "no positives"
        elif positives == len(y_true):
            excluded[name] = "no negatives"
        else:
            target = torch.as_tensor(y_true[:, k], dtype=torch.long)
            # torchmetrics integrates in float32: a perfect ranking can come out as 1.0000001; clip to [0, 1]
            per_class[name] = min(max(float(binary_auroc(y_score[:, k], target)), 0.0), 1.0)
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"macro_auc": value, "per_class_auc": per_class, "excluded": excluded, "n_scored": len(per_class)}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Mean absolute error, root mean squared error and Pearson's r of (n,) or (n, 1) predictions, over the
    records with a finite target and prediction (``n``; the others are counted in ``n_missing``). r is NaN when
    either side is constant or fewer than two records are scored."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"targets and predictions differ in length: {y_true.shape} vs {y_pred.shape}")
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    if not len(t):
        return {"mae": float("nan"), "rmse": float("nan"), "pearson_r": float("nan"), "n": 0,
                "n_missing": int((~ok).sum())}
    err = p - t
    r = float(np.corrcoef(t, p)[0, 1]) if len(t) > 1 and t.std() > 0 and p.std() > 0 else float("nan")
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "pearson_r": r,
            "n": int(len(t)), "n_missing": int((~ok).sum())}
