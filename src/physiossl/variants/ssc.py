"""+ the semi-supervised contrastive loss: unlabeled projections pulled toward the batch's labeled projections
(detached anchors) with weights y_m . p_i (:func:`physiossl.losses.semi_supervised_contrastive_loss`)."""

from . import register
from .base import Variant, semi_supervised_contrastive


@register("ssc")
class SemiSupervisedContrastive(Variant):
    label = "+ semi-supervised contrastive"
    order = 2
    losses = ("semi_supervised_contrastive",)
    projection = True

    def unlabeled_losses(self, training, xu, z_l, y):
        z_a = training.model.embed(training.augment(xu))
        return semi_supervised_contrastive(training, z_a, z_l, y)
