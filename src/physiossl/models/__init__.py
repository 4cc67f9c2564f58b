"""Encoders by name. ``build_encoder(name, in_channels, **kwargs)`` passes ``kwargs`` (a method config's
``encoder_args``, e.g. ``hidden`` for ``cpc``) to the encoder's constructor; ``in_channels`` comes from the data."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .cpc import CPCEncoder
from .xresnet1d import xresnet1d50, xresnet1d101

ENCODERS: dict[str, Callable[..., nn.Module]] = {"xresnet1d50": xresnet1d50, "xresnet1d101": xresnet1d101,
                                                 "cpc": CPCEncoder}


def encoder_args(name: str) -> list[str]:
    """The constructor arguments of encoder ``name`` that a config may set (all but ``in_channels``)."""
    return [p for p in inspect.signature(ENCODERS[name]).parameters if p != "in_channels"]


def build_encoder(name: str, in_channels: int = 12, **kwargs) -> nn.Module:
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r} (available: {sorted(ENCODERS)})")
    unknown = [key for key in kwargs if key not in encoder_args(name)]
    if unknown:
        raise ValueError(f"encoder {name!r} takes no argument {', '.join(map(repr, unknown))} "
                         f"(accepted: {encoder_args(name)})")
    return ENCODERS[name](in_channels=in_channels, **kwargs)
