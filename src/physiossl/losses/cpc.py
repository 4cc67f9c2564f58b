"""Contrastive predictive coding (van den Oord et al. 2018): InfoNCE over future encoded steps."""

from __future__ import annotations

from typing import Sequence

import torch

from ._common import full_precision

NEGATIVES = ("same_sequence", "batch", "all")


def same_sequence_negatives(drawn: torch.Tensor, positives: torch.Tensor, length: int) -> torch.Tensor:
    """The negative positions of every anchor of one prediction step under ``"same_sequence"``, (B, H, N).

    ``drawn`` (B, N) are positions in [0, length - 2] drawn uniformly with replacement, one set per sequence
    (shared by all anchors of that sequence and step); ``positives`` (H,) the anchors' positive positions in
    [0, length - 1]. An anchor takes the drawn positions as they are, except that one equal to its positive is
    replaced by ``length - 1`` (never drawn). As each drawn position is uniform over the length - 1 positions
    other than ``length - 1``, each of the anchor's negatives is uniform over the length - 1 positions other than
    its positive.
    """
    drawn, positives = drawn.unsqueeze(1), positives.view(1, -1, 1)
    return torch.where(drawn == positives, torch.full_like(drawn, length - 1), drawn)


@full_precision
def cpc_loss(predictions: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor, n_negatives: int = 128,
             negatives: str = "same_sequence", generator: torch.Generator | None = None,
             offsets: Sequence[int] | None = None) -> torch.Tensor:
    """Mean InfoNCE over every valid (s, b, t): -log softmax(logits)[positive].

    ``targets`` (B, T, D) are the encoded steps z. ``predictions`` holds S prediction steps, either as one
    (S, B, T, D) tensor or as a sequence of S tensors (B, H_s, D) with H_s >= T - k_s (later rows are ignored, so
    a step's predictor need only be applied to the contexts that have a future target). ``predictions[s][b, t]``
    (made from the context up to t) predicts ``targets[b, t + k_s]``, where ``offsets`` gives k_s (default
    k_s = s + 1: the steps 1..S ahead); only t + k_s < T is used, and a step without such t is skipped. Logits are
    dot products (no normalisation, no temperature); the positive is pred · z[b, t + k_s]. Negatives:

    - ``"same_sequence"`` (the CPC setting of Mehari & Strodthoff): ``n_negatives`` positions of the same sequence
      b, each uniform over the T - 1 positions other than the anchor's positive, drawn with replacement. One set of
      ``n_negatives`` positions in [0, T - 2] is drawn per (sequence b, step s) and shared by the anchors t of that
      sequence and step; an anchor whose positive is among them takes position T - 1 in its place (see
      :func:`same_sequence_negatives`). So every anchor's negatives have exactly the distribution of independent
      uniform draws, while the anchors of one (b, s) see correlated sets. Scored by one batched matmul per step
      against the n_negatives + 1 candidate positions, (B, T - k_s, n_negatives + 1).
    - ``"batch"``: positions (b', t') drawn uniformly with replacement from all B·T positions of the batch. One set
      of ``n_negatives`` positions is drawn per prediction step s and shared by all (b, t) of that step (logits
      (B, T, n_negatives) by one matmul); a drawn position that is an anchor's own positive is masked out for that
      anchor, so each anchor's negatives are uniform over the other positions and their number is ``n_negatives``
      minus the (rare) coincidences.
    - ``"all"``: deterministic, every other position of the same sequence (T - 1 negatives); for exact tests. Each
      step scores its anchors against all T positions of their sequence, (B, T - k_s, T) by one batched matmul,
      kept for the backward (S·B·T·T in total).

    The loss is accumulated one prediction step at a time over its valid anchors; the draws are made in the order
    of the steps, each as one ``torch.randint`` call: (B, n_negatives) per step for ``"same_sequence"``,
    (n_negatives,) per step for ``"batch"``. Random draws use ``generator`` (on its device; the global RNG of the
    targets' device when None). Computed in at least float32, outside autocast.
    """
    if isinstance(predictions, torch.Tensor) and predictions.ndim != 4:
        raise ValueError(f"expected predictions (S, B, T, D), got {tuple(predictions.shape)}")
    if not isinstance(predictions, torch.Tensor):
        predictions = list(predictions)
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    n_steps = len(predictions)
    offsets = list(range(1, n_steps + 1)) if offsets is None else [int(k) for k in offsets]
    if n_steps < 1:
        raise ValueError("need at least one prediction step")
    if len(offsets) != n_steps or min(offsets) < 1:
        raise ValueError(f"need one offset >= 1 per prediction step, got {offsets} for {n_steps} steps")
    if not _shapes_fit(predictions, targets, offsets):
        shapes = (tuple(predictions.shape) if isinstance(predictions, torch.Tensor)
                  else [tuple(p.shape) for p in predictions])
        raise ValueError(f"expected predictions (S, B, T, D) or S tensors (B, H_s, D) with T - k_s <= H_s <= T, and "
                         f"targets (B, T, D), got {shapes} and {tuple(targets.shape)} (offsets k_s {offsets})")
    b, t, _ = targets.shape
    if t < 2:
        raise ValueError("need sequences of at least 2 steps")
    if negatives != "all" and n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    device = targets.device

    def draw(high: int, size: tuple[int, ...]) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(high, size, generator=generator, device=gen_device).to(device)

    sequence = torch.arange(b, device=device).view(-1, 1)
    flat_targets = targets.reshape(b * t, -1)
    last = torch.full((b, 1), t - 1, dtype=torch.long, device=device)
    total, count = targets.new_zeros(()), 0
    for prediction, k in zip(predictions, offsets):
        horizon = t - k
        if horizon < 1:
            continue
        anchors = prediction[:, :horizon]  # (B, H, D); anchor h predicts position h + k
        future = torch.arange(k, t, device=device)  # (H,)
        if negatives == "all":
            scores = anchors @ targets.transpose(1, 2)  # (B, H, T)
            positive = torch.diagonal(scores, offset=k, dim1=1, dim2=2)
            total = total + (torch.logsumexp(scores, dim=-1) - positive).sum()
            count += b * horizon
            continue
        positive = (anchors * targets[:, k:]).sum(-1, keepdim=True)
        if negatives == "batch":
            pool = draw(b * t, (n_negatives,))
            negative = anchors @ flat_targets[pool].T  # (B, H, n_negatives)
            own = (sequence * t + future).unsqueeze(-1)
            negative = negative.masked_fill(pool == own, float("-inf"))
        else:
            drawn = draw(t - 1, (b, n_negatives))  # per (sequence, step), in [0, T - 2]
            columns = torch.cat([drawn, last], dim=1)  # (B, N + 1): the drawn positions and T - 1
            scores = torch.bmm(anchors, targets[sequence, columns].transpose(1, 2))  # (B, H, N + 1)
            hit = drawn.unsqueeze(1) == future.view(1, -1, 1)  # (B, H, N): drawn position is the anchor's positive
            negative = torch.where(hit, scores[..., -1:], scores[..., :-1])
        logits = torch.cat([positive, negative], dim=-1)
        total = total + (torch.logsumexp(logits, dim=-1) - logits[..., 0]).sum()
        count += b * horizon
    if count == 0:
        raise ValueError(f"no prediction step has a target within the {t} steps (offsets {offsets})")
    return total / count


def _shapes_fit(predictions: torch.Tensor | list[torch.Tensor], targets: torch.Tensor, offsets: list[int]) -> bool:
    """Whether targets are (B, T, D) and predictions (S, B, T, D) or S tensors (B, H_s, D), T - k_s <= H_s <= T."""
    if targets.ndim != 3:
        return False
    if isinstance(predictions, torch.Tensor):
        return predictions.ndim == 4 and predictions.shape[1:] == targets.shape
    b, t, d = targets.shape
    return all(p.ndim == 3 and p.shape[0] == b and t - k <= p.shape[1] <= t and p.shape[2] == d
               for p, k in zip(predictions, offsets))
