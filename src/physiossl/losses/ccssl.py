"""The class-aware contrastive loss of CCSSL (Yang et al., "Class-Aware Contrastive Semi-Supervised Learning",
CVPR 2022), the baseline of the sound-based sleep-staging comparison: a supervised-contrastive (SupCon) loss on
unlabeled data whose positives come from pseudo-labels, each positive pair weighted by the product of the two
confidences.

Following the paper (and the structure of its public implementation):

- pseudo-label c_i = argmax ŷ_i, confidence q_i = max ŷ_i of the (weak-view) probabilities;
- pairs of different samples are positives when both are confident (q >= ``threshold``) and share a
  pseudo-label; a sample below the threshold keeps only its own other views as positives (instance
  discrimination, as in SimCLR), so out-of-distribution or uncertain samples are not clustered into a class;
- every positive pair is reweighted by rho_ik = q_i q_k (the other views of sample i by q_i^2);
- SupCon form with the weighted mean of the positives' log-probabilities, temperature 0.07.

This project's choices: the embeddings are L2-normalised inside (idempotent for normalised inputs); ``probs`` are
detached (no gradient into the classifier through this loss); the temperature / base-temperature factor of the
SupCon code is left out (it is 1 at the defaults); an anchor without any positive (possible only with a single
view) contributes 0 and the loss is the mean over all anchors; the default threshold 0.8 is a tunable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import full_precision

EPS = 1e-8


@full_precision
def ccssl_loss(z: torch.Tensor, probs: torch.Tensor, temperature: float = 0.07,
               threshold: float = 0.8) -> torch.Tensor:
    """CCSSL class-aware contrastive loss, a scalar.

    ``z`` is (N, D), one view per sample, or (N, V, D), V views of each sample (e.g. two strong augmentations:
    ``torch.stack([z1, z2], dim=1)``); ``probs`` (N, K) are the predicted probabilities of the N samples. The
    V N rows r are taken view-major (r = v N + i, sample s(r) = i). With c_i = argmax ŷ_i, q_i = max ŷ_i,
    u_rk = cos(z_r, z_k) / temperature and the positive weights, for r != k,

        rho_rk = q_s(r) q_s(k)   if s(r) = s(k)                                      (other views of the sample)
                 q_s(r) q_s(k)   if c_s(r) = c_s(k) and q_s(r) >= threshold and q_s(k) >= threshold
                 0               otherwise,                        rho_rr = 0 (self-pairs excluded),

        L = 1/(V N) sum_r  -sum_{k != r} rho_rk log( exp(u_rk) / sum_{l != r} exp(u_rl) )
                            /  max(sum_{k != r} rho_rk, EPS).

    With one-hot ``probs`` (all confidences 1) this is the unweighted SupCon loss with labels argmax(probs).
    Gradients flow into ``z`` only. Computed in at least float32, outside autocast.
    """
    if z.ndim == 2:
        z = z[:, None, :]
    if z.ndim != 3 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"expected z of shape (N, D) or (N, V, D), got {tuple(z.shape)}")
    n, v, _ = z.shape
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] < 1:
        raise ValueError(f"expected probs of shape (N, K) with N = {n}, got {tuple(probs.shape)}")
    if v * n < 2:
        raise ValueError("expected at least two embeddings in all (N * V >= 2)")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    feats = F.normalize(z.transpose(0, 1).reshape(v * n, -1), dim=1)
    conf, pseudo = probs.detach().to(feats.dtype).max(dim=1)
    confident = conf >= threshold
    same_sample = torch.eye(n, dtype=torch.bool, device=z.device)
    positive = same_sample | ((pseudo[:, None] == pseudo[None, :]) & confident[:, None] & confident[None, :])
    rho = (positive * (conf[:, None] * conf[None, :])).repeat(v, v)
    not_self = ~torch.eye(v * n, dtype=torch.bool, device=z.device)
    rho = rho * not_self
    logits = (feats @ feats.T / temperature).masked_fill(~not_self, float("-inf"))
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(~not_self, 0.0)
    per_anchor = -(rho * log_prob).sum(dim=1) / rho.sum(dim=1).clamp_min(EPS)
    return per_anchor.mean()
