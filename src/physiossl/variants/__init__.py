"""Sleep-staging variants: what a run of the sleep ablation adds to the per-epoch cross-entropy of its labeled
sequences. A variant is a :class:`physiossl.variants.base.Variant` subclass declared with ``@register("name")`` in
a module of this package (:mod:`physiossl.registry`), with its metadata as class attributes: ``label`` (in the
report), ``order`` (its place in the report's tables), ``losses`` (the ``sleep.losses`` sections it reads),
``unlabeled`` (whether it trains on an unlabeled pool), ``projection`` (whether it has a projection head) and
``strong_augment`` (whether it reads ``sleep.strong_augment``). Adding a variant is adding a file."""

from ..registry import Registry

VARIANTS = Registry("sleep_variant", "physiossl.variants", label="sleep-staging variant")
register = VARIANTS.register


def variant_names() -> list[str]:
    """The variants in the order of the report's tables."""
    return sorted(VARIANTS.names(), key=lambda name: (VARIANTS[name].get("order", 0), name))
