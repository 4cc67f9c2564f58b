"""Augmentations of log-mel features for sound-based sleep staging, as batched torch operations.

Conventions:

- Input: sequences of N_s epochs (B, N_s, M, F) or single epochs (B, M, F) (treated as N_s = 1) of log-mel
  power in dB (10 log10 power): batch, epochs, mel bins, frames. The output has the input's shape and dtype.
- Randomness is drawn per sequence (row of the batch) from torch's global RNG on the input's device, without a
  Python loop over the batch, so ``torch.manual_seed`` / ``torch.random.fork_rng`` make it reproducible. The
  same parameters apply to all N_s epochs of a sequence unless a transform says otherwise (``time_mask`` draws
  its masks per epoch).
- ``p``: each sequence is transformed with probability ``p`` (per-sequence Bernoulli), otherwise returned
  unchanged; ``p = 0`` returns the input itself.
- Fractions (``max_frac``) are of the frames of one epoch.

Transforms (config name: class):

- ``gain`` (:class:`Gain`): a microphone gain, i.e. a dB offset uniform in ``db``.
- ``noise_mix`` (:class:`NoiseMix`): noise added in the power domain at an SNR uniform in ``snr_db``; the
  noise is another recording of the batch (``noise: batch``) or synthetic ``pink`` / ``white`` noise.
- ``time_mask`` (:class:`TimeMask`) and ``freq_mask`` (:class:`FreqMask`): SpecAugment masking.
- ``time_shift`` (:class:`TimeShift`): the sequence's concatenated spectrogram shifted in time, edge-padded.

Config (YAML) format, as for the ECG augmentations: a list of single-key mappings ``transform: {param: value}``
applied in order (``{}`` or an empty value means defaults; ranges are 2-element lists)::

    augment:
      - gain: {db: [-6, 6]}
      - noise_mix: {snr_db: [0, 20], noise: batch, p: 0.5}
      - time_mask: {n: 2, max_frac: 0.1}
      - freq_mask: {n: 2, max_bins: 4}
      - time_shift: {max_frac: 0.1}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import AUDIO_TRANSFORMS, register_audio_transform
from .ecg import Transform
from .ops import inside, real, uniform
from .validate import validate_audio_augment

DB = math.log(10.0) / 10.0
"""Natural-log units per dB: power = exp(DB · x) for x in dB."""


def mean_db(x: torch.Tensor) -> torch.Tensor:
    """The mean power of each sample of x (B, ...) in dB, 10 log10(mean(10^(x / 10))), computed stably: (B,)."""
    flat = x.flatten(1)
    return (torch.logsumexp(DB * flat, dim=1) - math.log(flat.shape[1])) / DB


def _epoch_fill(x: torch.Tensor, fill: str) -> torch.Tensor:
    """Per-epoch fill value (B, N_s, 1, 1): the mean or minimum dB value of each epoch."""
    return x.mean(dim=(2, 3), keepdim=True) if fill == "mean" else x.amin(dim=(2, 3), keepdim=True)


class AudioTransform(Transform):
    """Base class of the audio transforms: ``forward`` takes (B, N_s, M, F) or (B, M, F), applies
    :meth:`transform` (which sees (B, N_s, M, F)) and keeps each sequence's result with probability ``p``.

    Config validation attributes, besides those of :class:`physiossl.augment.ecg.Transform`: ``signed_params``
    (ranges [lo, hi] of any sign), ``option_params`` (parameter → allowed strings), ``unit_params`` (numbers in
    [0, 1]), ``positive_scalars`` (numbers > 0), ``ordered_params`` (pairs (a, b) that need a < b)."""

    signed_params: tuple[str, ...] = ()
    option_params: Mapping[str, tuple[str, ...]] = {}
    unit_params: tuple[str, ...] = ()
    positive_scalars: tuple[str, ...] = ()
    ordered_params: tuple[tuple[str, str], ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"{type(self).__name__} expects log-mel input (batch, N_s, n_mels, frames) or "
                             f"(batch, n_mels, frames), got shape {tuple(x.shape)}")
        if self.p <= 0.0:
            return x
        seq = x if x.dim() == 4 else x.unsqueeze(1)
        y = self.transform(seq)
        if self.p < 1.0:
            chosen = torch.rand(seq.shape[0], device=x.device) < self.p
            y = torch.where(chosen[:, None, None, None], y, seq)
        return y if x.dim() == 4 else y.squeeze(1)



def _range(values: Sequence[float]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


@register_audio_transform("gain")
class Gain(AudioTransform):
    """A gain: add a per-sequence offset uniform in ``db`` (dB) to every value (a gain in the power domain is an
    offset in dB)."""

    signed_params = ("db",)

    def __init__(self, db: Sequence[float] = (-6.0, 6.0), p: float = 1.0):
        super().__init__(p)
        self.db = _range(db)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        offset = uniform(*self.db, (x.shape[0],), x)
        return x + offset.to(x.dtype)[:, None, None, None]


@register_audio_transform("noise_mix")
class NoiseMix(AudioTransform):
    """Mix noise into each sequence in the power domain at an SNR uniform in ``snr_db`` (dB):

        y = 10 log10(10^(x / 10) + 10^((n + g) / 10)) = x + 10 log10(1 + 10^((n + g - x) / 10)),

    evaluated with ``torch.logaddexp``, so y >= x everywhere (mixing never removes energy). ``n`` is a noise
    spectrogram of the sequence's shape and ``g`` the per-sequence offset that makes the mean power of x over the
    mean power of the scaled noise (both over all epochs, bins and frames) equal to the SNR.

    ``noise``: ``"batch"``: the noise is another sequence of the same batch (each sequence is paired with a
    different one by a random cyclic permutation; a batch of one is mixed with itself), i.e. two recordings are
    mixed. ``"white"`` / ``"pink"``: synthetic noise generated per sequence in the mel domain: a spectral profile
    plus a slow level fluctuation (Gaussian, ``fluctuation_db`` standard deviation at ``knots_per_epoch`` knots
    per epoch, linearly interpolated over the concatenated frames, common to all bins) plus an independent
    Gaussian texture per bin and frame (``texture_db``). The profile assumes area-normalised (Slaney) mel filters
    spaced evenly on the mel scale from ``fmin`` to ``fmax`` Hz (set them to the features' band): white noise is
    then flat across the bins and pink noise (power ∝ 1 / f) falls as -10 log10 of the bins' centre
    frequencies."""

    signed_params = ("snr_db",)
    option_params = {"noise": ("batch", "pink", "white")}
    positive_scalars = ("fmax",)
    ordered_params = (("fmin", "fmax"),)
    fluctuation_db = 3.0
    knots_per_epoch = 6
    texture_db = 2.0

    def __init__(self, snr_db: Sequence[float] = (0.0, 20.0), noise: str = "batch", fmin: float = 0.0,
                 fmax: float = 8000.0, p: float = 1.0):
        super().__init__(p)
        if noise not in self.option_params["noise"]:
            raise ValueError(f"NoiseMix: noise must be one of {list(self.option_params['noise'])}, got {noise!r}")
        if not 0 <= fmin < fmax:
            raise ValueError(f"NoiseMix: needs 0 <= fmin < fmax, got fmin={fmin!r}, fmax={fmax!r}")
        self.snr_db = _range(snr_db)
        self.noise = noise
        self.fmin = float(fmin)
        self.fmax = float(fmax)

    def profile(self, n_mels: int, like: torch.Tensor) -> torch.Tensor:
        """The synthetic noise's spectral profile in dB per mel bin (n_mels,), 0 at the lowest bin."""
        if self.noise == "white":
            return torch.zeros(n_mels, device=like.device, dtype=like.dtype)
        low, top = (2595.0 * math.log10(1.0 + hz / 700.0) for hz in (self.fmin, self.fmax))
        mels = torch.linspace(low, top, n_mels + 2, device=like.device, dtype=torch.float64)[1:-1]
        hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
        return (-10.0 * torch.log10(hz / hz[0])).to(like.dtype)

    def synthetic(self, x: torch.Tensor) -> torch.Tensor:
        """Synthetic noise spectrograms in dB of x's shape (B, N_s, M, F)."""
        b, s, m, f = x.shape
        knots = max(2, s * self.knots_per_epoch + 1)
        slow = torch.randn(b, 1, knots, device=x.device, dtype=x.dtype) * self.fluctuation_db
        slow = F.interpolate(slow, size=s * f, mode="linear", align_corners=True).reshape(b, s, 1, f)
        texture = torch.randn(b, s, m, f, device=x.device, dtype=x.dtype) * self.texture_db
        return self.profile(m, x)[None, None, :, None] + slow + texture

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        xr = x.to(real(x))
        b = x.shape[0]
        if self.noise == "batch":
            order = torch.randperm(b, device=x.device)
            partner = torch.empty_like(order)
            partner[order] = order.roll(-1)
            noise = xr[partner]
        else:
            noise = self.synthetic(xr)
        snr = uniform(*self.snr_db, (b,), xr)
        g = mean_db(xr) - mean_db(noise) - snr
        gap = DB * (noise + g[:, None, None, None] - xr)
        return (xr + torch.logaddexp(torch.zeros_like(gap), gap) / DB).to(x.dtype)


@register_audio_transform("time_mask")
class TimeMask(AudioTransform):
    """SpecAugment time masking, drawn per epoch: ``n`` masks per epoch, each over all mel bins and a span of
    frames whose width is uniform in 0..⌊``max_frac`` · F⌋ at a uniform position inside the epoch; masked values
    are set to the epoch's mean dB (``fill: mean``) or minimum (``fill: min``), computed before masking."""

    unit_params = ("max_frac",)
    option_params = {"fill": ("mean", "min")}

    def __init__(self, n: int = 2, max_frac: float = 0.1, fill: str = "mean", p: float = 1.0):
        super().__init__(p)
        if fill not in self.option_params["fill"]:
            raise ValueError(f"TimeMask: fill must be one of {list(self.option_params['fill'])}, got {fill!r}")
        self.n = int(n)
        self.max_frac = float(max_frac)
        self.fill = fill

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _, f = x.shape
        widest = min(f, int(self.max_frac * f))
        if self.n < 1 or widest < 1:
            return x
        rows = b * s * self.n
        width = (torch.rand(rows, device=x.device) * (widest + 1)).long()
        start = (torch.rand(rows, device=x.device) * (f - width + 1)).long()
        masked = inside(start, width, f).reshape(b, s, self.n, f).any(2)
        return torch.where(masked[:, :, None, :], _epoch_fill(x, self.fill), x)


@register_audio_transform("freq_mask")
class FreqMask(AudioTransform):
    """SpecAugment frequency masking: ``n`` masks per sequence, each a band of mel bins whose width is uniform in
    0..``max_bins`` (at most M) at a uniform position, the same bins in all N_s epochs of the sequence; masked
    values are set to each epoch's mean dB (``fill: mean``) or minimum (``fill: min``), computed before
    masking."""

    option_params = {"fill": ("mean", "min")}

    def __init__(self, n: int = 2, max_bins: int = 4, fill: str = "mean", p: float = 1.0):
        super().__init__(p)
        if fill not in self.option_params["fill"]:
            raise ValueError(f"FreqMask: fill must be one of {list(self.option_params['fill'])}, got {fill!r}")
        self.n = int(n)
        self.max_bins = int(max_bins)
        self.fill = fill

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, _, m, _ = x.shape
        widest = min(m, self.max_bins)
        if self.n < 1 or widest < 1:
            return x
        rows = b * self.n
        width = (torch.rand(rows, device=x.device) * (widest + 1)).long()
        start = (torch.rand(rows, device=x.device) * (m - width + 1)).long()
        masked = inside(start, width, m).reshape(b, self.n, m).any(1)
        return torch.where(masked[:, None, :, None], _epoch_fill(x, self.fill), x)


@register_audio_transform("time_shift")
class TimeShift(AudioTransform):
    """Shift each sequence in time by a whole number of frames d uniform in -D..D, D = ⌊``max_frac`` · F⌋.

    The shift applies to the sequence's epochs concatenated along time (N_s · F frames), so content moves across
    epoch boundaries by up to D frames while labels stay put: y[t] = x[t - d]. Frames shifted in from outside the
    sequence repeat its first (d > 0) or last (d < 0) frame (edge padding, not wrap-around)."""

    unit_params = ("max_frac",)

    def __init__(self, max_frac: float = 0.1, p: float = 1.0):
        super().__init__(p)
        self.max_frac = float(max_frac)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, s, m, f = x.shape
        most = int(self.max_frac * f)
        if most < 1:
            return x
        shift = (torch.rand(b, device=x.device) * (2 * most + 1)).long() - most
        t = s * f
        source = (torch.arange(t, device=x.device)[None, :] - shift[:, None]).clamp(0, t - 1)
        flat = x.permute(0, 2, 1, 3).reshape(b, m, t)
        moved = flat.gather(2, source[:, None, :].expand(b, m, t))
        return moved.reshape(b, m, s, f).permute(0, 2, 1, 3).contiguous()


def build_audio_augment(spec: list[dict], key: str = "augment") -> nn.Sequential:
    """The audio augmentation pipeline of config ``spec`` (see :func:`validate_audio_augment`), applied in order.
    Raises ValueError listing the problems (under config key ``key``) if it is invalid."""
    problems = validate_audio_augment(spec, key)
    if problems:
        raise ValueError("invalid audio augmentation config:\n" + "\n".join(problems))
    return nn.Sequential(*(AUDIO_TRANSFORMS.load(name)(**(params or {}))
                           for item in spec for name, params in item.items()))
