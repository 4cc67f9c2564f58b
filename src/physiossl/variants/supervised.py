"""Supervised only: the per-epoch cross-entropy over labeled sequences (unscored epochs ignored)."""

from . import register
from .base import Variant


@register("supervised")
class Supervised(Variant):
    label = "supervised only"
    order = 0
    unlabeled = False

    def unlabeled_losses(self, training, xu, z_l, y):
        return {}
