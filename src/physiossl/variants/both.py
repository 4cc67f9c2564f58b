"""+ both the sequential-consistency and the semi-supervised contrastive loss, on one augmented view shared by
the two (the paper's full method)."""

from . import register
from .base import Variant, semi_supervised_contrastive, sequential_consistency


@register("both")
class Both(Variant):
    label = "+ both"
    order = 3
    losses = ("sequential_consistency", "semi_supervised_contrastive")
    projection = True

    def unlabeled_losses(self, training, xu, z_l, y):
        z_a = training.model.embed(training.augment(xu))
        return {**sequential_consistency(training, xu, z_a), **semi_supervised_contrastive(training, z_a, z_l, y)}
