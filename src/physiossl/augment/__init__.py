"""Augmentations: ECG transforms (:mod:`.ecg`) declared with ``@register_transform("name")``, log-mel audio
transforms (:mod:`.audio`) with ``@register_audio_transform("name")``, SimPer's speed views (:mod:`.periodic`),
the tensor operations they share (:mod:`.ops`) and the config checks (:mod:`.validate`, which imports no torch).
"""

from ..registry import Registry

TRANSFORMS = Registry("transform", "physiossl.augment")
AUDIO_TRANSFORMS = Registry("audio_transform", "physiossl.augment")
register_transform = TRANSFORMS.register
register_audio_transform = AUDIO_TRANSFORMS.register
