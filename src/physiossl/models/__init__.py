"""Encoders and sleep models by name (:mod:`physiossl.registry`): ``@register_encoder("name")`` on an encoder
class or factory function, ``@register_sleep_model("name")`` on a :class:`physiossl.models.sleep.SleepModel`.

``build_encoder(name, in_channels, **kwargs)`` passes ``kwargs`` (a method config's ``encoder_args``, e.g.
``hidden`` for ``cpc``) to the encoder's constructor; ``in_channels`` comes from the data. Listing them and
checking their arguments imports no torch."""

from __future__ import annotations

from ..registry import Registry

ENCODERS = Registry("encoder", "physiossl.models")
SLEEP_MODELS = Registry("sleep_model", "physiossl.models")
register_encoder = ENCODERS.register
register_sleep_model = SLEEP_MODELS.register
#: sleep-model constructor arguments that come from the data, not from the config
SLEEP_MODEL_DATA_ARGS = ("n_mels", "frames", "n_classes")


def encoder_args(name: str) -> list[str]:
    """The constructor arguments of encoder ``name`` that a config may set (all but ``in_channels``)."""
    return [p for p in ENCODERS[name].params if p != "in_channels"]


def sleep_model_args(name: str) -> list[str]:
    """The constructor arguments of sleep model ``name`` that a config may set (all but n_mels, frames and
    n_classes, which come from the data)."""
    return [p for p in SLEEP_MODELS[name].params if p not in SLEEP_MODEL_DATA_ARGS]


def _unknown_args(kind: str, name: str, args: dict, accepted: list[str]) -> None:
    unknown = [key for key in args if key not in accepted]
    if unknown:
        raise ValueError(f"{kind} {name!r} takes no argument {', '.join(map(repr, unknown))} (accepted: {accepted})")


def build_encoder(name: str, in_channels: int = 12, **kwargs):
    """Encoder ``name`` (KeyError for an unknown one, ValueError for an unknown argument)."""
    _unknown_args("encoder", name, kwargs, encoder_args(name))
    return ENCODERS.load(name)(in_channels=in_channels, **kwargs)


def build_sleep_model(name: str, *, n_mels: int, frames: int, n_classes: int, **args):
    """Sleep model ``name`` for (B, N_s, n_mels, frames) input and ``n_classes`` stages, with config arguments
    ``args`` (see :func:`sleep_model_args`). KeyError for an unknown name, ValueError for an unknown argument."""
    _unknown_args("sleep model", name, args, sleep_model_args(name))
    return SLEEP_MODELS.load(name)(n_mels=n_mels, frames=frames, n_classes=n_classes, **args)
