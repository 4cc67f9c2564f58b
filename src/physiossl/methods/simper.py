"""SimPer (Yang et al., ICLR 2023): self-supervised learning of periodic targets from views of each clip played
back at several speeds, contrasted through the similarity of feature time series with soft speed targets."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..augment.periodic import SpeedViews
from ..losses.simper import band_bins, simper_loss
from . import register
from .base import SSLMethod

log = logging.getLogger(__name__)

TIME_WARPING = ("random_resized_crop", "dynamic_time_warp")


def _pair(value) -> tuple[float, float] | None:
    """``value`` as (low, high) if it is a list of two real numbers, else None."""
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return float(value[0]), float(value[1])
    return None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@register("simper")
class SimPer(SSLMethod):
    """Every clip x (B, C, L) of the batch is played at ``n_speeds`` = M speeds drawn uniformly in ``speed_range``
    and sorted (:class:`physiossl.augment.periodic.SpeedViews`), each view ``view_s`` seconds long from its own
    random start; each speed view then gets two independent periodicity-invariant augmentations (``augment``,
    ``self.views``). Each view goes through the encoder's feature map and the series head, a 1 × 1 convolution
    ``series_head`` = Conv1d(feature_dim, 1, 1), to a feature time series at fs / ``encoder.stride`` Hz
    (:meth:`series`). The loss is the SimPer generalised InfoNCE (:func:`physiossl.losses.simper.simper_loss`)
    within each clip between the series z1, z2 (B, M, T') of the two augmentations, with soft targets
    softmax(-|s_i - s_j| / ``temperature``) from the speeds s, averaged over both directions
    (z1 → z2 and z2 → z1). ``similarity``: ``mxcorr`` (maximum normalised cross-correlation over lags) or
    ``npsd`` (normalised power spectra in a band).

    ``band_hz`` is the range of frequencies the target takes at speed 1 (heart rate, in Hz). With speeds in
    [s_lo, s_hi] the views carry it at s_lo · low … s_hi · high; ``npsd`` compares the power in that band,
    clipped to the Nyquist frequency of the feature series, fs / (2 · stride). The constructor raises a
    ValueError when more than half of the band would alias at the highest speed (s_hi · (low + high) / 2 above
    the Nyquist frequency); lower the encoder stride (``encoder_args: {stage_strides: [1, 2, 1, 1]}`` gives
    stride 8 for the xresnet1d encoders) or narrow ``speed_range`` / ``band_hz``. A smaller overlap is
    logged and the band clipped.

    From the paper: speeds uniform in [0.5, 2] (``speed_range``), sorted; two invariant views per speed; the
    raw similarities as logits; label temperature τ = 0.1 (``temperature``); MXCorr and nPSD similarities.
    Project choices: M = 5 speeds (``n_speeds``; the authors' tutorial uses 10), 4 s views (``view_s``) from
    clips of ``crop_s`` >= ``view_s`` · s_hi seconds (required: 8 s with the defaults, so that a view at the
    highest speed fits in the clip), ``similarity`` mxcorr, ``band_hz`` [0.5, 3.5] Hz (30–210 bpm), the linear
    1 × 1 series head on the encoder's last feature map, the symmetric loss, and the checks: no time-warping
    transforms (``random_resized_crop``, ``dynamic_time_warp``: they change the period) in ``augment``.

    The series head is exported with the encoder (:meth:`exported_heads`, ``"series"``): the dominant frequency
    of ``series`` reads the target frequency without labels.
    """

    schema = {"properties": {
        "n_speeds": {"type": "integer", "minimum": 2, "default": 5},
        "speed_range": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                        "minItems": 2, "maxItems": 2, "default": [0.5, 2.0]},
        "view_s": {"type": "number", "exclusiveMinimum": 0, "default": 4.0},
        "similarity": {"type": "string", "enum": ["mxcorr", "npsd"], "default": "mxcorr"},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
        "band_hz": {"type": "array", "items": {"type": "number", "minimum": 0},
                    "minItems": 2, "maxItems": 2, "default": [0.5, 3.5]},
    }, "required": ["crop_s"]}

    @classmethod
    def check_config(cls, cfg: dict, key: str) -> list[str]:
        """No time-warping transforms in ``augment``; ``speed_range`` and ``band_hz`` with low <= high (band:
        low < high); ``crop_s`` >= ``view_s`` · ``speed_range[1]``."""
        problems = []
        augment = cfg.get("augment")
        if isinstance(augment, list):
            for i, item in enumerate(augment):
                if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in TIME_WARPING:
                    name = next(iter(item))
                    problems.append(f"config key '{key}.augment[{i}].{name}': {name} warps time and changes the "
                                    f"period of the signal; SimPer's views must keep it (transforms that warp "
                                    f"time: {', '.join(TIME_WARPING)})")
        speeds = _pair(cfg.get("speed_range"))
        if speeds is not None and speeds[0] > speeds[1]:
            problems.append(f"config key '{key}.speed_range': needs low <= high, got {list(cfg['speed_range'])}")
        band = _pair(cfg.get("band_hz"))
        if band is not None and not band[0] < band[1]:
            problems.append(f"config key '{key}.band_hz': needs low < high, got {list(cfg['band_hz'])}")
        crop, view = _number(cfg.get("crop_s")), _number(cfg.get("view_s"))
        if speeds is not None and crop is not None and view is not None and crop < view * speeds[1]:
            problems.append(f"config key '{key}.crop_s': a view of view_s = {view} s played at the highest speed "
                            f"{speeds[1]} reads {view * speeds[1]:g} s of the clip, so crop_s must be at least "
                            f"{view * speeds[1]:g}, got {crop}")
        return problems

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        c = self.cfg
        low, high = (float(v) for v in c["speed_range"])
        self.view_len = int(round(c["view_s"] * self.fs))
        self.speed_views = SpeedViews(c["n_speeds"], self.view_len, (low, high))
        self.series_head = nn.Conv1d(self.encoder.feature_dim, 1, 1)
        self.feature_fs = self.fs / self.encoder.stride
        self.series_len = math.ceil(self.view_len / self.encoder.stride)
        self.band = self._band(low, high)

    def _band(self, low: float, high: float) -> tuple[float, float]:
        """The band of the feature series that the target frequencies occupy over the speed range, clipped to
        the Nyquist frequency; ValueError where the encoder's feature series is too coarse."""
        f_lo, f_hi = (float(v) for v in self.cfg["band_hz"])
        nyquist = self.feature_fs / 2
        where = (f"the feature series of encoder stride {self.encoder.stride} at fs = {self.fs:g} Hz runs at "
                 f"{self.feature_fs:g} Hz (Nyquist {nyquist:g} Hz)")
        advice = ("lower the encoder stride (encoder_args: {stage_strides: [1, 2, 1, 1]} gives stride 8 for the "
                  "xresnet1d encoders) or narrow speed_range / band_hz")
        if self.series_len < 2:
            raise ValueError(f"SimPer: a view of {self.view_len} samples gives a feature series of {self.series_len} "
                             f"sample(s) at encoder stride {self.encoder.stride}; lengthen view_s or " + advice)
        if high * (f_lo + f_hi) / 2 > nyquist:
            raise ValueError(f"SimPer: the target band {f_lo:g}–{f_hi:g} Hz played at the highest speed {high:g} "
                             f"spans {high * f_lo:g}–{high * f_hi:g} Hz, but {where}: more than half of the band "
                             f"would alias; " + advice)
        if high * f_hi > nyquist:
            log.info("SimPer: %s; target frequencies above %.3g Hz alias at the highest speed %g (band_hz %g–%g Hz)",
                     where, nyquist / high, high, f_lo, f_hi)
        band = (low * f_lo, min(high * f_hi, nyquist))
        if self.cfg["similarity"] == "npsd" and not bool(band_bins(self.series_len, self.feature_fs, *band).any()):
            raise ValueError(f"SimPer: no frequency bin of the {self.series_len}-sample feature series at "
                             f"{self.feature_fs:g} Hz lies in the band {band[0]:g}–{band[1]:g} Hz; lengthen view_s "
                             f"or widen band_hz")
        return band

    def series(self, x: torch.Tensor) -> torch.Tensor:
        """The feature time series (N, T') of signals ``x`` (N, C, T): encoder feature map → series head."""
        return self.series_head(self.encoder.features(x))[:, 0]

    def exported_heads(self) -> dict[str, nn.Module]:
        return {"series": self.series_head}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        b, m = x.shape[0], self.cfg["n_speeds"]
        needed = math.ceil((self.view_len - 1) * self.speed_views.speed_range[1]) + 1
        if x.shape[-1] < needed:
            raise ValueError(f"SimPer: clips of {x.shape[-1]} samples are too short for views of {self.view_len} "
                             f"samples at speed up to {self.speed_views.speed_range[1]:g} (need {needed}); "
                             f"raise crop_s")
        views, speeds = self.speed_views(x)
        z = self.series(torch.cat([self.views(views), self.views(views)])).view(2, b, m, -1)
        speeds = speeds.view(b, m)
        kwargs = {"similarity": self.cfg["similarity"], "temperature": self.cfg["temperature"],
                  "fs": self.feature_fs, "band": self.band if self.cfg["similarity"] == "npsd" else None}
        return 0.5 * (simper_loss(z[0], z[1], speeds, speeds, **kwargs)
                      + simper_loss(z[1], z[0], speeds, speeds, **kwargs))
