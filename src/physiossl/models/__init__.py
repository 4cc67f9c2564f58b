"""Encoders by name."""

from __future__ import annotations

from torch import nn

from .xresnet1d import xresnet1d50, xresnet1d101

ENCODERS = {"xresnet1d50": xresnet1d50, "xresnet1d101": xresnet1d101}


def build_encoder(name: str, in_channels: int = 12) -> nn.Module:
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r} (available: {sorted(ENCODERS)})")
    return ENCODERS[name](in_channels=in_channels)
