"""CCSSL: FixMatch (pseudo-labels of the weak view above ``threshold`` supervise the strong view) and the
class-aware contrastive loss of CCSSL over the weak and strong projections (:func:`physiossl.losses.ccssl_loss`)."""

import torch
import torch.nn.functional as F

from ..losses import ccssl_loss
from . import register
from .base import Variant


@register("ccssl")
class CCSSL(Variant):
    label = "CCSSL (FixMatch + class-aware contrastive)"
    order = 4
    losses = ("ccssl",)
    projection = True
    strong_augment = True

    def unlabeled_losses(self, training, xu, z_l, y):
        cc, n_classes = training.cfg["losses"]["ccssl"], training.n_classes
        z_w = training.model.embed(training.augment(xu))
        z_s = training.model.embed(training.strong(xu))
        probs = training.model.classify(z_w).detach().softmax(-1).reshape(-1, n_classes)
        confidence, pseudo = probs.max(-1)
        logits_s = training.model.classify(z_s).reshape(-1, n_classes)
        mask = (confidence >= cc["threshold"]).float()
        views = torch.stack([training.proj(z_w.reshape(-1, z_w.shape[-1])),
                             training.proj(z_s.reshape(-1, z_s.shape[-1]))], 1)
        return {"fixmatch": cc["fixmatch_weight"] * (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean(),
                "ccssl": cc["weight"] * ccssl_loss(views, probs, cc["temperature"], cc["threshold"])}
