"""Semi-supervised contrastive loss (SSC) of sound-based sleep staging (Asleep): labeled embeddings serve as fixed
anchors; each unlabeled embedding is pulled toward the anchors in proportion to how likely it is to share their
class, and pushed from all anchors through the softmax. No pseudo-labels: the predicted probabilities are used
as given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import full_precision

EPS = 1e-8


@full_precision
def semi_supervised_contrastive_loss(z_unlabeled: torch.Tensor, probs: torch.Tensor, z_labeled: torch.Tensor,
                                     labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SSC loss over N unlabeled embeddings and M labeled anchors, a scalar.

    ``z_unlabeled`` (N, D) with predicted class probabilities ``probs`` (N, K); ``z_labeled`` (M, D) with
    integer ``labels`` (M,) in [0, K). With y_m the one-hot label of anchor m and ŷ_i the probabilities of
    sample i,

        p_mi = y_m · ŷ_i = ŷ_i[labels_m],      s_im = cos(z_i, z_m) / temperature,
        L = 1/N sum_i  -sum_m p_mi log softmax_m(s_im)  /  max(sum_m p_mi, EPS).

    The softmax runs over all M anchors, so anchors of other classes act as negatives. Both ``z_labeled`` and
    ``probs`` are detached inside the loss: gradients flow only into ``z_unlabeled`` (the caller need not detach
    them). A sample with p_mi = 0 for every anchor (e.g. no anchor of any class it may belong to) contributes 0.
    Computed in at least float32, outside autocast.
    """
    if z_unlabeled.ndim != 2 or z_labeled.ndim != 2 or z_unlabeled.shape[1] != z_labeled.shape[1]:
        raise ValueError(f"expected z_unlabeled (N, D) and z_labeled (M, D) with the same D, "
                         f"got {tuple(z_unlabeled.shape)} and {tuple(z_labeled.shape)}")
    if probs.ndim != 2 or probs.shape[0] != z_unlabeled.shape[0] or probs.shape[1] < 1:
        raise ValueError(f"expected probs of shape (N, K) with N = {z_unlabeled.shape[0]}, got {tuple(probs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != z_labeled.shape[0] or labels.is_floating_point():
        raise ValueError(f"expected integer labels of shape (M,) with M = {z_labeled.shape[0]}, "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    if z_labeled.shape[0] < 1 or z_unlabeled.shape[0] < 1:
        raise ValueError("expected at least one labeled and one unlabeled embedding")
    k = probs.shape[1]
    if bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"labels must lie in [0, {k}), got values in [{int(labels.min())}, {int(labels.max())}]")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    zu = F.normalize(z_unlabeled, dim=1)
    zl = F.normalize(z_labeled.detach(), dim=1).to(zu.dtype)
    log_p = torch.log_softmax(zu @ zl.T / temperature, dim=1)
    weights = probs.detach().to(zu.dtype)[:, labels]
    per_sample = -(weights * log_p).sum(dim=1) / weights.sum(dim=1).clamp_min(EPS)
    return per_sample.mean()
