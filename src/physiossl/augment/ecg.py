"""ECG augmentations as batched torch operations (one call transforms a whole (B, C, T) batch on its device).

Conventions:

- Signals are float tensors of shape (B, C, T): batch, leads, samples, normalised per lead; amplitude parameters
  (``std``, ``amplitude``) are in the signal's units. Lengths and displacements given "in samples" are samples of
  the input; frequencies are in Hz and need the sampling rate ``fs`` (a constructor argument that
  :func:`build_augment` / :func:`build_noise` inject; it is not a config key). Fractions are of the length T.
- Every transform draws its randomness from torch's global RNG on the input's device, independently per sample,
  without a Python loop over the batch, so ``torch.manual_seed`` / ``torch.random.fork_rng`` make it reproducible.
- ``p``: each sample is transformed with probability ``p`` (per-sample Bernoulli), otherwise returned unchanged.
- The physiological noise transforms (``gaussian_noise``, ``baseline_wander``, ``powerline_noise``, ``em_noise``,
  ``baseline_shift``) are additive. ``level_param`` names their amplitude-like parameter. By default the amplitude
  of each sample is drawn uniformly in [0, amplitude]; with ``fixed_amplitude=True`` (as :func:`build_noise`
  sets for the robustness protocol) it is exactly ``amplitude``, so with the same seed the added noise scales
  linearly with the amplitude. Baseline wander, powerline interference and baseline shifts are common to all
  leads, each lead scaled by its own gain drawn uniformly in [0.5, 1]; white and electrode-motion noise are
  independent per lead.

Config (YAML) format of an augmentation pipeline: a list of single-key mappings ``transform: {param: value}``
applied in order (``{}`` or an empty value means defaults; ranges are 2-element lists)::

    augment:
      - random_resized_crop: {scale: [0.5, 1.0]}
      - timeout: {area: [0.2, 0.4]}
      - gaussian_noise: {std: 0.05, p: 0.5}

A noise spec for :func:`build_noise` maps transform name to its parameters at level 1, e.g.
``{baseline_wander: {amplitude: 0.1}, powerline_noise: {}}``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import TRANSFORMS, register_transform
from .ops import inside, real, resample, uniform
from .validate import is_number, transform_params, validate_augment, validate_noise


def _sinusoids(freq: torch.Tensor, phase: torch.Tensor, t: int, fs: float) -> torch.Tensor:
    """sin(2π f n / fs + φ) at samples n = 0..t-1 for ``freq``/``phase`` of shape (..., K) → (..., K, t), float64.
    Evaluated at the sample times, so a frequency at or above fs/2 appears at its alias."""
    n = torch.arange(t, device=freq.device, dtype=torch.float64)
    cycles = freq.double()[..., None] * n / fs
    return torch.sin(2 * math.pi * (cycles - cycles.floor()) + phase.double()[..., None])


def _segment(fraction: tuple[float, float], x: torch.Tensor,
             whole: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A random contiguous segment per sample of x (B, C, T): its ``(start, length)``, each of shape (B,).

    The length is a fraction uniform in ``fraction`` of T. With ``whole`` both are whole samples (long): the length
    rounded down and the start uniform over the T - length + 1 positions where the segment fits; otherwise they
    are real (``real(x)``): the length at least 1 and the start uniform in [0, T - length]."""
    b, t = x.shape[0], x.shape[-1]
    length = uniform(*fraction, (b,), x) * t
    if whole:
        length = length.long().clamp(0, t)
        return (torch.rand(b, device=x.device) * (t - length + 1)).long(), length
    length = length.clamp_min(1.0)
    return torch.rand(b, device=x.device, dtype=length.dtype) * (t - length), length


def _lead_gain(b: int, c: int, x: torch.Tensor) -> torch.Tensor:
    """Per-lead gains in [0.5, 1] of shape (B, C, 1) for noise common to all leads."""
    return uniform(0.5, 1.0, (b, c), x)[:, :, None]


class Transform(nn.Module):
    """Base class: ``forward`` applies :meth:`transform` to each sample with probability ``p``.

    Class attributes used by config validation: ``fraction_params`` (ranges within [0, 1]), ``positive_params``
    (ranges of strictly positive values), ``choice_params`` (lists of positive values to choose from);
    ``level_param`` names the amplitude-like parameter of a noise transform (None otherwise)."""

    level_param: str | None = None
    fraction_params: tuple[str, ...] = ()
    positive_params: tuple[str, ...] = ()
    choice_params: tuple[str, ...] = ()

    def __init__(self, p: float = 1.0):
        super().__init__()
        self.p = float(p)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0:
            return x
        y = self.transform(x)
        if self.p >= 1.0:
            return y
        chosen = torch.rand(x.shape[0], device=x.device) < self.p
        return torch.where(chosen[:, None, None], y, x)

    def extra_repr(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))


class NoiseTransform(Transform):
    """Additive noise whose per-sample amplitude is uniform in [0, level] or, with ``fixed_amplitude``, exactly
    the level (the value of the ``level_param`` attribute)."""

    def __init__(self, p: float = 1.0, fixed_amplitude: bool = False):
        super().__init__(p)
        self.fixed_amplitude = bool(fixed_amplitude)

    def _amplitude(self, shape: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        level = float(getattr(self, self.level_param))
        u = torch.rand(shape, device=x.device, dtype=real(x))
        return torch.full_like(u, level) if self.fixed_amplitude else level * u


def _check_fs(fs: float) -> float:
    if not fs > 0:
        raise ValueError(f"sampling rate fs must be positive, got {fs}")
    return float(fs)


@register_transform("random_resized_crop")
class RandomResizedCrop(Transform):
    """Crop a random fraction ``scale`` of each sample's length and stretch it back to the full length
    (linear interpolation), independently per sample."""

    fraction_params = ("scale",)

    def __init__(self, scale: Sequence[float] = (0.5, 1.0), p: float = 1.0):
        super().__init__(p)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        size = uniform(*self.scale, (b,), x) * (t - 1)
        start = torch.rand(b, device=x.device, dtype=size.dtype) * ((t - 1) - size)
        steps = torch.linspace(0, 1, t, device=x.device, dtype=size.dtype)
        return resample(x, start[:, None] + size[:, None] * steps[None, :])


@register_transform("timeout")
class TimeOut(Transform):
    """Zero a random contiguous span covering a fraction ``area`` of each sample (all leads)."""

    fraction_params = ("area",)

    def __init__(self, area: Sequence[float] = (0.2, 0.4), p: float = 1.0):
        super().__init__(p)
        self.area = (float(area[0]), float(area[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        start, length = _segment(self.area, x)
        return x * (~inside(start, length, x.shape[-1]))[:, None, :].to(x.dtype)


@register_transform("channel_resize")
class ChannelResize(Transform):
    """Multiply each lead of each sample by its own factor, drawn log-uniformly in ``scale``."""

    positive_params = ("scale",)

    def __init__(self, scale: Sequence[float] = (0.5, 2.0), p: float = 1.0):
        super().__init__(p)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _ = x.shape
        factor = torch.exp(uniform(math.log(self.scale[0]), math.log(self.scale[1]), (b, c), x))
        return x * factor[:, :, None].to(x.dtype)


@register_transform("dynamic_time_warp")
class DynamicTimeWarp(Transform):
    """Smooth random monotonic time warping with fixed endpoints.

    Per sample, log-normal speeds (exp of a standard normal) are drawn at ``warps + 1`` evenly spaced knots and
    linearly interpolated; their cumulative sum, normalised to [0, T - 1], gives the read positions. The
    displacement from the identity is then scaled so its maximum is ``radius`` samples, or less where that
    would make the local speed (read samples per output sample) drop below ``min_speed``, so the warp stays
    monotonic. The signal is read at those positions by linear interpolation, the same for all leads."""

    min_speed = 0.1

    def __init__(self, warps: int = 3, radius: float = 10.0, p: float = 1.0):
        super().__init__(p)
        self.warps = int(warps)
        self.radius = float(radius)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        if t < 3 or self.warps < 1 or self.radius <= 0:
            return x
        knots = torch.exp(torch.randn(b, 1, self.warps + 1, device=x.device, dtype=real(x)))
        speed = F.interpolate(knots, size=t - 1, mode="linear", align_corners=True)[:, 0]
        pos = torch.cat([torch.zeros_like(speed[:, :1]), speed.cumsum(1)], 1)
        pos = pos / pos[:, -1:] * (t - 1)
        steps = torch.arange(t, device=x.device, dtype=pos.dtype)[None, :]
        shift = pos - steps
        slack = 1.0 - pos.diff(dim=1).amin(1, keepdim=True)
        gain = torch.minimum(self.radius / shift.abs().amax(1, keepdim=True).clamp_min(1e-12),
                             (1.0 - self.min_speed) / slack.clamp_min(1e-12))
        return resample(x, (steps + gain * shift).clamp(0, t - 1))


@register_transform("gaussian_blur")
class GaussianBlur(Transform):
    """Gaussian smoothing along time with a per-sample standard deviation drawn uniformly in ``sigma`` (samples).

    Implemented as a grouped conv1d with one normalised kernel per sample (odd size covering ±3 × the largest
    sigma) and replicate padding, so the length is kept and constant signals are preserved."""

    def __init__(self, sigma: Sequence[float] = (0.1, 1.0), p: float = 1.0):
        super().__init__(p)
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        sigma = uniform(*self.sigma, (b,), x).clamp_min(1e-3)
        half = max(1, math.ceil(3 * self.sigma[1]))
        offsets = torch.arange(-half, half + 1, device=x.device, dtype=sigma.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)
        weight = kernel.repeat_interleave(c, 0)[:, None, :]
        padded = F.pad(x.reshape(1, b * c, t), (half, half), mode="replicate")
        return F.conv1d(padded, weight, groups=b * c).reshape(b, c, t)


@register_transform("gaussian_noise")
class GaussianNoise(NoiseTransform):
    """Additive white Gaussian noise, independent per lead, with a per-sample standard deviation drawn uniformly
    in [0, ``std``] (exactly ``std`` with ``fixed_amplitude``)."""

    level_param = "std"

    def __init__(self, std: float = 0.05, p: float = 1.0, fixed_amplitude: bool = False):
        super().__init__(p, fixed_amplitude)
        self.std = float(std)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        std = self._amplitude((x.shape[0],), x)
        return x + (torch.randn(x.shape, device=x.device, dtype=std.dtype) * std[:, None, None]).to(x.dtype)


@register_transform("baseline_wander")
class BaselineWander(NoiseTransform):
    """Baseline wander: a sum of ``components`` sinusoids, each with a frequency uniform in ``freq`` (Hz), a
    uniform phase and an amplitude uniform in [0, ``amplitude``] (exactly ``amplitude`` with ``fixed_amplitude``),
    added to all leads with per-lead gains uniform in [0.5, 1]."""

    level_param = "amplitude"

    def __init__(self, amplitude: float = 0.1, freq: Sequence[float] = (0.05, 0.5), components: int = 2,
                 p: float = 1.0, fixed_amplitude: bool = False, *, fs: float):
        super().__init__(p, fixed_amplitude)
        self.amplitude = float(amplitude)
        self.freq = (float(freq[0]), float(freq[1]))
        self.components = int(components)
        self.fs = _check_fs(fs)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        k = self.components
        amp = self._amplitude((b, k), x)
        freq = uniform(*self.freq, (b, k), x, torch.float64)
        phase = uniform(0.0, 2 * math.pi, (b, k), x, torch.float64)
        wander = (amp.double()[..., None] * _sinusoids(freq, phase, t, self.fs)).sum(1).to(amp.dtype)
        return x + (_lead_gain(b, c, x) * wander[:, None, :]).to(x.dtype)


@register_transform("powerline_noise")
class PowerlineNoise(NoiseTransform):
    """Powerline interference: per sample one sinusoid at a frequency chosen uniformly among ``freq`` (Hz), with a
    uniform phase and an amplitude uniform in [0, ``amplitude``] (exactly ``amplitude`` with
    ``fixed_amplitude``), added to all leads with per-lead gains uniform in [0.5, 1]. The sinusoid is evaluated
    at the sample times, so at fs/2 or below the mains frequency it appears at its alias, as in a recording."""

    level_param = "amplitude"
    choice_params = ("freq",)

    def __init__(self, amplitude: float = 0.05, freq: Sequence[float] | float = (50.0, 60.0), p: float = 1.0,
                 fixed_amplitude: bool = False, *, fs: float):
        super().__init__(p, fixed_amplitude)
        self.amplitude = float(amplitude)
        self.freq = (float(freq),) if isinstance(freq, (int, float)) else tuple(float(f) for f in freq)
        self.fs = _check_fs(fs)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        amp = self._amplitude((b,), x)
        choices = torch.tensor(self.freq, device=x.device, dtype=torch.float64)
        freq = choices[torch.randint(len(self.freq), (b,), device=x.device)]
        phase = uniform(0.0, 2 * math.pi, (b,), x, torch.float64)
        hum = _sinusoids(freq[:, None], phase[:, None], t, self.fs)[:, 0].to(amp.dtype) * amp[:, None]
        return x + (_lead_gain(b, c, x) * hum[:, None, :]).to(x.dtype)


@register_transform("em_noise")
class EMNoise(NoiseTransform):
    """Electrode-motion-like noise: band-limited noise during one burst.

    Per sample and lead, white Gaussian noise is low-pass filtered by zeroing its FFT bins at 0 Hz and above
    ``cutoff`` Hz and normalised to unit RMS over the record. It is multiplied by a burst envelope common to all
    leads: a random contiguous segment whose length is a fraction uniform in ``duration`` of T, with raised-cosine
    ramps over 10 % of the segment at each end (smooth, so the burst adds little energy above the cutoff), and by
    the per-sample amplitude, uniform in [0, ``amplitude``] (exactly ``amplitude`` with ``fixed_amplitude``):
    ``amplitude`` is the RMS of the noise inside the burst."""

    level_param = "amplitude"
    fraction_params = ("duration",)
    ramp = 0.1

    def __init__(self, amplitude: float = 0.1, duration: Sequence[float] = (0.25, 1.0), cutoff: float = 10.0,
                 p: float = 1.0, fixed_amplitude: bool = False, *, fs: float):
        super().__init__(p, fixed_amplitude)
        self.amplitude = float(amplitude)
        self.duration = (float(duration[0]), float(duration[1]))
        self.cutoff = float(cutoff)
        self.fs = _check_fs(fs)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        amp = self._amplitude((b,), x)
        white = torch.randn(b, c, t, device=x.device, dtype=amp.dtype)
        freqs = torch.fft.rfftfreq(t, d=1.0 / self.fs, device=x.device)
        band = ((freqs > 0) & (freqs <= self.cutoff)).to(amp.dtype)
        noise = torch.fft.irfft(torch.fft.rfft(white) * band, n=t)
        noise = noise / noise.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
        start, length = _segment(self.duration, x, whole=False)
        u = (torch.arange(t, device=x.device, dtype=amp.dtype)[None, :] - start[:, None]) / length[:, None]
        rise = (torch.minimum(u, 1 - u) / self.ramp).clamp(0, 1)
        envelope = 0.5 - 0.5 * torch.cos(math.pi * rise)
        return x + (noise * (amp[:, None] * envelope)[:, None, :]).to(x.dtype)


@register_transform("baseline_shift")
class BaselineShift(NoiseTransform):
    """A step in the baseline: over a random contiguous segment whose length is a fraction uniform in ``duration``
    of T (rounded down to whole samples), add a constant offset uniform in [-``amplitude``, ``amplitude``]
    (±``amplitude`` with a random sign with ``fixed_amplitude``), common to all leads with per-lead gains
    uniform in [0.5, 1]."""

    level_param = "amplitude"
    fraction_params = ("duration",)

    def __init__(self, amplitude: float = 0.5, duration: Sequence[float] = (0.1, 0.5), p: float = 1.0,
                 fixed_amplitude: bool = False):
        super().__init__(p, fixed_amplitude)
        self.amplitude = float(amplitude)
        self.duration = (float(duration[0]), float(duration[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        amp = self._amplitude((b,), x)
        sign = torch.where(torch.rand(b, device=x.device) < 0.5, -1.0, 1.0).to(amp.dtype)
        start, length = _segment(self.duration, x)
        step = (sign * amp)[:, None] * inside(start, length, t).to(amp.dtype)
        return x + (_lead_gain(b, c, x) * step[:, None, :]).to(x.dtype)


def _make(cls: type[nn.Module], params: Mapping[str, Any] | None, fs: float, **extra: Any) -> nn.Module:
    kwargs = {**(params or {}), **extra}
    if "fs" in inspect.signature(cls.__init__).parameters:
        kwargs["fs"] = fs
    return cls(**kwargs)


def build_augment(spec: list[dict], fs: float, key: str = "augment") -> nn.Sequential:
    """The augmentation pipeline of config ``spec`` (see :func:`validate_augment`) for signals sampled at ``fs``
    Hz, applied in order. Raises ValueError listing the problems (under config key ``key``) if it is invalid."""
    problems = validate_augment(spec, key)
    if problems:
        raise ValueError("invalid augmentation config:\n" + "\n".join(problems))
    return nn.Sequential(*(_make(TRANSFORMS.load(name), params, fs) for item in spec for name, params in item.items()))


def build_noise(spec: dict[str, dict], level: float, fs: float, key: str = "noise") -> nn.Sequential:
    """Noise for the robustness protocol: the transforms of ``spec`` (noise transform → parameters at level 1),
    applied in order, each with its ``level_param`` multiplied by ``level``, ``p = 1`` and
    ``fixed_amplitude=True``, so the amplitude is exactly level × base (frequencies, phases and positions stay
    random). ``level == 0`` gives the identity. Raises ValueError for an invalid spec or a negative level."""
    problems = validate_noise(spec, key)
    if not (is_number(level) and level >= 0):
        problems.append(f"noise level must be a non-negative number, got {level!r}")
    if problems:
        raise ValueError("invalid noise config:\n" + "\n".join(problems))
    if level == 0:
        return nn.Sequential()
    modules = []
    for name, params in spec.items():
        cls = TRANSFORMS.load(name)
        params = dict(params or {})
        base = params.get(cls.level_param, transform_params(TRANSFORMS[name])[cls.level_param])
        params[cls.level_param] = float(base) * float(level)
        modules.append(_make(cls, params, fs, p=1.0, fixed_amplitude=True))
    return nn.Sequential(*modules)
