"""+ the sequential-consistency loss between the epoch embeddings of two augmented views of unlabeled sequences
(:func:`physiossl.losses.sequential_consistency_loss`)."""

from . import register
from .base import Variant, sequential_consistency


@register("sc")
class SequentialConsistency(Variant):
    label = "+ sequential consistency"
    order = 1
    losses = ("sequential_consistency",)

    def unlabeled_losses(self, training, xu, z_l, y):
        z_a = training.model.embed(training.augment(xu))
        return sequential_consistency(training, xu, z_a)
