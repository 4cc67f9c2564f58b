"""The base class of the sleep-staging variants and the unlabeled losses they share."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import semi_supervised_contrastive_loss, sequential_consistency_loss


class Variant:
    """A variant's losses on a batch of unlabeled sequences ``xu`` (B, N_s, M, F), given the labeled batch's
    epoch embeddings ``z_l`` and stages ``y`` (-1: unscored). ``training`` is the
    :class:`physiossl.stages.sleep.SleepStaging` module: its ``model`` (``embed`` / ``classify``), ``augment``,
    ``strong``, ``proj`` (the projection head, where ``projection``), ``cfg`` (the sleep config) and ``n_classes``.
    Every loss comes weighted by its config's ``weight``."""

    label: str = ""
    order: int = 0
    losses: tuple = ()
    unlabeled: bool = True
    projection: bool = False
    strong_augment: bool = False

    def unlabeled_losses(self, training: nn.Module, xu: torch.Tensor, z_l: torch.Tensor,
                         y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def sequential_consistency(training: nn.Module, xu: torch.Tensor, z_a: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sc``: the sequential-consistency loss between ``z_a`` and the embeddings of a second augmented view."""
    z_b = training.model.embed(training.augment(xu))
    sc = training.cfg["losses"]["sequential_consistency"]
    return {"sc": sc["weight"] * sequential_consistency_loss(z_a, z_b, sc["w_min"])}


def semi_supervised_contrastive(training: nn.Module, z_a: torch.Tensor, z_l: torch.Tensor,
                                y: torch.Tensor) -> dict[str, torch.Tensor]:
    """``ssc``: unlabeled projections of ``z_a`` pulled toward the labeled projections (detached anchors)."""
    ssc = training.cfg["losses"]["semi_supervised_contrastive"]
    probs = training.model.classify(z_a).softmax(-1)
    scored = y.reshape(-1) >= 0
    anchors = training.proj(z_l.reshape(-1, z_l.shape[-1])[scored])
    return {"ssc": ssc["weight"] * semi_supervised_contrastive_loss(
        training.proj(z_a.reshape(-1, z_a.shape[-1])), probs.reshape(-1, probs.shape[-1]), anchors,
        y.reshape(-1)[scored], ssc["temperature"])}
