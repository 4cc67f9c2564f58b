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
