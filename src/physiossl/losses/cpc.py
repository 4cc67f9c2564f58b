"""Contrastive predictive coding (van den Oord et al. 2018): InfoNCE over future encoded steps."""

from __future__ import annotations

import torch

NEGATIVES = ("same_sequence", "batch", "all")


def _logits(predictions: torch.Tensor, targets: torch.Tensor, n_negatives: int, negatives: str,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (s, b, t): logits (S, B, T, 1 + C) with the positive in column 0, and the validity mask (S, B, T)."""
    if predictions.ndim != 4 or targets.ndim != 3 or predictions.shape[1:] != targets.shape:
        raise ValueError(f"expected predictions (S, B, T, D) and targets (B, T, D), "
                         f"got {tuple(predictions.shape)} and {tuple(targets.shape)}")
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    n_steps, b, t, _ = predictions.shape
    if t < 2:
        raise ValueError("need sequences of at least 2 steps")
    if negatives != "all" and n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    device = predictions.device
    dtype = torch.promote_types(predictions.dtype, torch.float32)
    predictions, targets = predictions.to(dtype), targets.to(dtype)

    steps = torch.arange(n_steps, device=device).view(-1, 1, 1)
    times = torch.arange(t, device=device).view(1, 1, -1)
    future = (times + steps + 1).expand(n_steps, b, t)  # position of the positive
    valid = future < t
    if not valid.any():
        raise ValueError(f"no step predicts inside the sequence (S={n_steps}, T={t})")
    future = future.clamp(max=t - 1)

    def draw(high: int, size: tuple[int, ...]) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        return torch.randint(high, size, generator=generator, device=gen_device).to(device)

    if negatives == "batch":
        flat_targets = targets.reshape(b * t, -1)
        pool = draw(b * t, (n_steps, n_negatives))  # shared per step s
        positive = (predictions * targets[torch.arange(b, device=device).view(1, -1, 1), future]).sum(-1, keepdim=True)
        negative = torch.einsum("sbtd,snd->sbtn", predictions, flat_targets[pool])
        own = (torch.arange(b, device=device).view(1, -1, 1) * t + future).unsqueeze(-1)
        negative = negative.masked_fill(pool.view(n_steps, 1, 1, n_negatives) == own, float("-inf"))
        return torch.cat([positive, negative], dim=-1), valid

    scores = torch.einsum("sbtd,bud->sbtu", predictions, targets)  # against every step of the same sequence
    positive = scores.gather(-1, future.unsqueeze(-1))
    if negatives == "all":
        others = scores.masked_fill(torch.arange(t, device=device) == future.unsqueeze(-1), float("-inf"))
        return torch.cat([positive, others], dim=-1), valid
    index = draw(t - 1, (n_steps, b, t, n_negatives))
    index = index + (index >= future.unsqueeze(-1)).long()  # uniform over the T - 1 positions != positive
    return torch.cat([positive, scores.gather(-1, index)], dim=-1), valid


def cpc_loss(predictions: torch.Tensor, targets: torch.Tensor, n_negatives: int = 128,
             negatives: str = "same_sequence", generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean InfoNCE over every valid (s, b, t): -log softmax(logits)[positive].

    ``targets`` (B, T, D) are the encoded steps z; ``predictions`` (S, B, T, D): ``predictions[s, b, t]`` (made from
    the context up to t) predicts ``targets[b, t + s + 1]``; only t + s + 1 < T is used. Logits are dot products
    (no normalisation, no temperature); the positive is pred · z[b, t+s+1]. Negatives:

    - ``"same_sequence"`` (the CPC setting of Mehari & Strodthoff): ``n_negatives`` positions of the same sequence b,
      drawn uniformly with replacement from the T - 1 positions other than the positive. Computed by scoring each
      prediction against all T steps of its sequence, (S, B, T, T), and gathering the drawn columns, so no
      (S, B, T, n_negatives, D) tensor is formed.
    - ``"batch"``: positions (b', t') drawn uniformly with replacement from all B·T positions of the batch. For
      memory and compute, one set of ``n_negatives`` positions is drawn per prediction step s and shared by all
      (b, t) of that step (logits (S, B, T, n_negatives) by one matmul); a drawn position that is an anchor's own
      positive is masked out for that anchor, so each anchor's negatives are uniform over the other positions and
      their number is ``n_negatives`` minus the (rare) coincidences.
    - ``"all"``: deterministic, every other position of the same sequence (T - 1 negatives); for exact tests.

    Random draws use ``generator`` (on its device; the global RNG of the predictions' device when None).
    """
    logits, valid = _logits(predictions, targets, n_negatives, negatives, generator)
    loss = torch.logsumexp(logits, dim=-1) - logits[..., 0]
    return loss[valid].mean()


@torch.no_grad()
def cpc_accuracy(predictions: torch.Tensor, targets: torch.Tensor, n_negatives: int = 128,
                 negatives: str = "same_sequence", generator: torch.Generator | None = None) -> torch.Tensor:
    """Fraction of valid (s, b, t) whose positive logit beats every negative (same arguments as ``cpc_loss``)."""
    logits, valid = _logits(predictions, targets, n_negatives, negatives, generator)
    hit = logits[..., 0] > logits[..., 1:].amax(dim=-1)
    return hit[valid].float().mean()
