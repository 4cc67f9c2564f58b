"""Contrastive predictive coding (van den Oord et al. 2018): InfoNCE over future encoded steps."""

from __future__ import annotations

import torch

from ._common import full_precision

NEGATIVES = ("same_sequence", "batch", "all")


@full_precision
def cpc_loss(predictions: torch.Tensor, targets: torch.Tensor, n_negatives: int = 128,
             negatives: str = "same_sequence", generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean InfoNCE over every valid (s, b, t): -log softmax(logits)[positive].

    ``targets`` (B, T, D) are the encoded steps z; ``predictions`` (S, B, T, D): ``predictions[s, b, t]`` (made from
    the context up to t) predicts ``targets[b, t + s + 1]``; only t + s + 1 < T is used. Logits are dot products
    (no normalisation, no temperature); the positive is pred · z[b, t+s+1]. Negatives:

    - ``"same_sequence"`` (the CPC setting of Mehari & Strodthoff): ``n_negatives`` positions of the same sequence b,
      drawn uniformly with replacement from the T - 1 positions other than the positive.
    - ``"batch"``: positions (b', t') drawn uniformly with replacement from all B·T positions of the batch. For
      memory and compute, one set of ``n_negatives`` positions is drawn per prediction step s and shared by all
      (b, t) of that step (logits (B, T, n_negatives) by one matmul); a drawn position that is an anchor's own
      positive is masked out for that anchor, so each anchor's negatives are uniform over the other positions and
      their number is ``n_negatives`` minus the (rare) coincidences.
    - ``"all"``: deterministic, every other position of the same sequence (T - 1 negatives); for exact tests.

    The loss is accumulated one prediction step s at a time over its valid anchors t < T - s - 1. For
    ``"same_sequence"`` and ``"all"`` each step scores its anchors against all T steps of their sequence,
    (B, T - s - 1, T) by one batched matmul, so no (B, T, n_negatives, D) tensor is formed; with
    ``"same_sequence"`` the drawn columns are picked by indexing, which keeps only the indices for the backward,
    so the peak memory is about B·T·T scores (and, in the backward, their dense gradient) for one step at a time,
    plus the S·B·T·(1 + n_negatives) picked logits and indices kept for the backward. ``"all"`` keeps every step's
    scores for the backward (S·B·T·T in total). ``"batch"`` needs B·T·n_negatives logits per step.

    Random draws use ``generator`` (on its device; the global RNG of the predictions' device when None).
    Computed in at least float32, outside autocast.
    """
    if predictions.ndim != 4 or targets.ndim != 3 or predictions.shape[1:] != targets.shape:
        raise ValueError(f"expected predictions (S, B, T, D) and targets (B, T, D), "
                         f"got {tuple(predictions.shape)} and {tuple(targets.shape)}")
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    n_steps, b, t, _ = predictions.shape
    if t < 2:
        raise ValueError("need sequences of at least 2 steps")
    if n_steps < 1:
        raise ValueError("need at least one prediction step")
    if negatives != "all" and n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    device = predictions.device

    def draw(high: int, size: tuple[int, ...]) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(high, size, generator=generator, device=gen_device).to(device)

    sequence = torch.arange(b, device=device).view(-1, 1)
    flat_targets = targets.reshape(b * t, -1)
    total, count = predictions.new_zeros(()), 0
    for s in range(min(n_steps, t - 1)):
        horizon = t - s - 1
        anchors = predictions[s, :, :horizon]  # (B, H, D); anchor h predicts position h + s + 1
        future = torch.arange(s + 1, t, device=device)  # (H,)
        if negatives == "batch":
            positive = (anchors * targets[:, s + 1:]).sum(-1, keepdim=True)
            pool = draw(b * t, (n_negatives,))
            negative = anchors @ flat_targets[pool].T  # (B, H, n_negatives)
            own = (sequence * t + future).unsqueeze(-1)
            logits = torch.cat([positive, negative.masked_fill(pool == own, float("-inf"))], dim=-1)
        else:
            scores = anchors @ targets.transpose(1, 2)  # (B, H, T)
            positive = torch.diagonal(scores, offset=s + 1, dim1=1, dim2=2).unsqueeze(-1)
            if negatives == "all":
                total = total + (torch.logsumexp(scores, dim=-1) - positive[..., 0]).sum()
                count += b * horizon
                continue
            index = draw(t - 1, (b, horizon, n_negatives))
            index = index + (index >= future.view(1, -1, 1)).long()  # uniform over the T - 1 positions != positive
            rows = torch.arange(horizon, device=device).view(1, -1, 1)
            logits = torch.cat([positive, scores[sequence.unsqueeze(-1), rows, index]], dim=-1)
        total = total + (torch.logsumexp(logits, dim=-1) - logits[..., 0]).sum()
        count += b * horizon
    return total / count
