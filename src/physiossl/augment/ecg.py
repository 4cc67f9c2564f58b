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


def _real(x: torch.Tensor) -> torch.dtype:
    """The dtype random parameters and positions are computed in (float64 for float64 input, else float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _uniform(lo: float, hi: float, shape: tuple[int, ...], x: torch.Tensor, dtype: torch.dtype | None = None):
    return lo + (hi - lo) * torch.rand(shape, device=x.device, dtype=dtype or _real(x))


def _resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of x (B, C, T) at fractional sample positions ``pos`` (B, T') in [0, T - 1]."""
    b, c, t = x.shape
    n = pos.shape[1]
    left = pos.floor().long().clamp(0, t - 1)
    right = (left + 1).clamp(max=t - 1)
    frac = (pos - left).to(x.dtype)[:, None, :]
    gather = lambda idx: x.gather(2, idx[:, None, :].expand(b, c, n))  # noqa: E731
    return gather(left) * (1 - frac) + gather(right) * frac


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
    are real (``_real(x)``): the length at least 1 and the start uniform in [0, T - length]."""
    b, t = x.shape[0], x.shape[-1]
    length = _uniform(*fraction, (b,), x) * t
    if whole:
        length = length.long().clamp(0, t)
        return (torch.rand(b, device=x.device) * (t - length + 1)).long(), length
    length = length.clamp_min(1.0)
    return torch.rand(b, device=x.device, dtype=length.dtype) * (t - length), length


def _inside(start: torch.Tensor, length: torch.Tensor, t: int) -> torch.Tensor:
    """(B, T) boolean mask of the samples n with start <= n < start + length."""
    steps = torch.arange(t, device=start.device)[None, :]
    return (steps >= start[:, None]) & (steps < (start + length)[:, None])


def _lead_gain(b: int, c: int, x: torch.Tensor) -> torch.Tensor:
    """Per-lead gains in [0.5, 1] of shape (B, C, 1) for noise common to all leads."""
    return _uniform(0.5, 1.0, (b, c), x)[:, :, None]


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
        u = torch.rand(shape, device=x.device, dtype=_real(x))
        return torch.full_like(u, level) if self.fixed_amplitude else level * u


def _check_fs(fs: float) -> float:
    if not fs > 0:
        raise ValueError(f"sampling rate fs must be positive, got {fs}")
    return float(fs)


class RandomResizedCrop(Transform):
    """Crop a random fraction ``scale`` of each sample's length and stretch it back to the full length
    (linear interpolation), independently per sample."""

    fraction_params = ("scale",)

    def __init__(self, scale: Sequence[float] = (0.5, 1.0), p: float = 1.0):
        super().__init__(p)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        size = _uniform(*self.scale, (b,), x) * (t - 1)
        start = torch.rand(b, device=x.device, dtype=size.dtype) * ((t - 1) - size)
        steps = torch.linspace(0, 1, t, device=x.device, dtype=size.dtype)
        return _resample(x, start[:, None] + size[:, None] * steps[None, :])


class TimeOut(Transform):
    """Zero a random contiguous span covering a fraction ``area`` of each sample (all leads)."""

    fraction_params = ("area",)

    def __init__(self, area: Sequence[float] = (0.2, 0.4), p: float = 1.0):
        super().__init__(p)
        self.area = (float(area[0]), float(area[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        start, length = _segment(self.area, x)
        return x * (~_inside(start, length, x.shape[-1]))[:, None, :].to(x.dtype)


class ChannelResize(Transform):
    """Multiply each lead of each sample by its own factor, drawn log-uniformly in ``scale``."""

    positive_params = ("scale",)

    def __init__(self, scale: Sequence[float] = (0.5, 2.0), p: float = 1.0):
        super().__init__(p)
        self.scale = (float(scale[0]), float(scale[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _ = x.shape
        factor = torch.exp(_uniform(math.log(self.scale[0]), math.log(self.scale[1]), (b, c), x))
        return x * factor[:, :, None].to(x.dtype)


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
        knots = torch.exp(torch.randn(b, 1, self.warps + 1, device=x.device, dtype=_real(x)))
        speed = F.interpolate(knots, size=t - 1, mode="linear", align_corners=True)[:, 0]
        pos = torch.cat([torch.zeros_like(speed[:, :1]), speed.cumsum(1)], 1)
        pos = pos / pos[:, -1:] * (t - 1)
        steps = torch.arange(t, device=x.device, dtype=pos.dtype)[None, :]
        shift = pos - steps
        slack = 1.0 - pos.diff(dim=1).amin(1, keepdim=True)
        gain = torch.minimum(self.radius / shift.abs().amax(1, keepdim=True).clamp_min(1e-12),
                             (1.0 - self.min_speed) / slack.clamp_min(1e-12))
        return _resample(x, (steps + gain * shift).clamp(0, t - 1))


class GaussianBlur(Transform):
    """Gaussian smoothing along time with a per-sample standard deviation drawn uniformly in ``sigma`` (samples).

    Implemented as a grouped conv1d with one normalised kernel per sample (odd size covering ±3 × the largest
    sigma) and replicate padding, so the length is kept and constant signals are preserved."""

    def __init__(self, sigma: Sequence[float] = (0.1, 1.0), p: float = 1.0):
        super().__init__(p)
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        sigma = _uniform(*self.sigma, (b,), x).clamp_min(1e-3)
        half = max(1, math.ceil(3 * self.sigma[1]))
        offsets = torch.arange(-half, half + 1, device=x.device, dtype=sigma.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)
        weight = kernel.repeat_interleave(c, 0)[:, None, :]
        padded = F.pad(x.reshape(1, b * c, t), (half, half), mode="replicate")
        return F.conv1d(padded, weight, groups=b * c).reshape(b, c, t)


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
        freq = _uniform(*self.freq, (b, k), x, torch.float64)
        phase = _uniform(0.0, 2 * math.pi, (b, k), x, torch.float64)
        wander = (amp.double()[..., None] * _sinusoids(freq, phase, t, self.fs)).sum(1).to(amp.dtype)
        return x + (_lead_gain(b, c, x) * wander[:, None, :]).to(x.dtype)


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
        phase = _uniform(0.0, 2 * math.pi, (b,), x, torch.float64)
        hum = _sinusoids(freq[:, None], phase[:, None], t, self.fs)[:, 0].to(amp.dtype) * amp[:, None]
        return x + (_lead_gain(b, c, x) * hum[:, None, :]).to(x.dtype)


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
        step = (sign * amp)[:, None] * _inside(start, length, t).to(amp.dtype)
        return x + (_lead_gain(b, c, x) * step[:, None, :]).to(x.dtype)


TRANSFORMS: dict[str, type[nn.Module]] = {
    "random_resized_crop": RandomResizedCrop,
    "timeout": TimeOut,
    "gaussian_noise": GaussianNoise,
    "channel_resize": ChannelResize,
    "dynamic_time_warp": DynamicTimeWarp,
    "gaussian_blur": GaussianBlur,
    "baseline_wander": BaselineWander,
    "powerline_noise": PowerlineNoise,
    "em_noise": EMNoise,
    "baseline_shift": BaselineShift,
}
NOISE_TRANSFORMS: dict[str, type[nn.Module]] = {
    name: cls for name, cls in TRANSFORMS.items() if getattr(cls, "level_param", None) is not None
}
_INJECTED = ("fs",)
_SET_BY_NOISE = ("p", "fixed_amplitude")


def _params(cls: type[nn.Module], noise: bool = False) -> dict[str, Any]:
    """Config parameters of a transform (constructor arguments except injected ones) → defaults."""
    skip = {"self", *_INJECTED, *(_SET_BY_NOISE if noise else ())}
    return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items() if n not in skip}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(cls: type[nn.Module], name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` of ``cls`` (None when it is)."""
    if name == "p":
        ok = _is_number(value) and 0 <= value <= 1
        return None if ok else f"parameter 'p' must be a probability in [0, 1], got {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"parameter '{name}' must be true or false, got {value!r}"
    if name in getattr(cls, "choice_params", ()):
        values = [value] if _is_number(value) else value
        if isinstance(values, (list, tuple)) and values and all(_is_number(v) and v > 0 for v in values):
            return None
        return f"parameter '{name}' must be a positive number or a non-empty list of them, got {value!r}"
    if isinstance(default, tuple):
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)):
            return f"parameter '{name}' must be a range [lo, hi] of two numbers, got {value!r}"
        lo, hi = value
        if lo > hi:
            return f"parameter '{name}' range [lo, hi] needs lo <= hi, got {list(value)}"
        if name in getattr(cls, "positive_params", ()) and lo <= 0:
            return f"parameter '{name}' range must be positive, got {list(value)}"
        if lo < 0:
            return f"parameter '{name}' range must be non-negative, got {list(value)}"
        if name in getattr(cls, "fraction_params", ()) and hi > 1:
            return f"parameter '{name}' range is a fraction of the length and must lie in [0, 1], got {list(value)}"
        return None
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"parameter '{name}' must be a non-negative integer, got {value!r}"
    ok = _is_number(value) and value >= 0
    return None if ok else f"parameter '{name}' must be a non-negative number, got {value!r}"


def _check_transform(where: str, name: Any, params: Any, allowed: Mapping[str, type[nn.Module]],
                     noise: bool) -> list[str]:
    if name not in allowed:
        return [f"config key '{where}': unknown transform '{name}'; valid: {', '.join(allowed)}"]
    if params is None:
        return []
    if not isinstance(params, Mapping):
        return [f"config key '{where}': parameters must be a mapping (or {{}} for defaults), got {params!r}"]
    cls = allowed[name]
    known = _params(cls, noise)
    problems = []
    for key, value in params.items():
        if key not in known:
            note = " (fs is set from the data's sampling rate)" if key in _INJECTED else ""
            note += " (set by the noise protocol)" if noise and key in _SET_BY_NOISE else ""
            problems.append(f"config key '{where}': unknown parameter '{key}' for {name}{note}; "
                            f"valid: {', '.join(known) or 'none'}")
        elif (problem := _check_value(cls, key, value, known[key])) is not None:
            problems.append(f"config key '{where}': {problem}")
    return problems


def validate_augment(spec: Any, key: str) -> list[str]:
    """Problems of an augmentation pipeline config ``spec`` found at dotted config key ``key`` (empty if valid).

    ``spec`` must be a list (an empty list is the identity) of single-key mappings ``transform: params`` with a
    known transform, known parameters, ranges as [lo, hi] with lo <= hi, probabilities in [0, 1] and
    non-negative amplitudes. Messages read ``config key '<key>[i].<transform>': ...``."""
    return validate_pipeline(spec, key, TRANSFORMS,
                             lambda where, name, params: _check_transform(where, name, params, TRANSFORMS, noise=False))


def validate_pipeline(spec: Any, key: str, transforms: Mapping[str, Any], check) -> list[str]:
    """Problems of a pipeline ``spec`` (a list of single-key mappings ``transform: params``) at config key ``key``;
    ``check(where, name, params)`` returns the problems of one item, ``transforms`` names the valid ones."""
    if not isinstance(spec, list):
        return [f"config key '{key}': must be a list of single-key mappings (transform: params), "
                f"got {type(spec).__name__}"]
    problems = []
    for i, item in enumerate(spec):
        if not (isinstance(item, Mapping) and len(item) == 1):
            problems.append(f"config key '{key}[{i}]': must be a single-key mapping transform: params, got {item!r}; "
                            f"valid transforms: {', '.join(transforms)}")
            continue
        ((name, params),) = item.items()
        problems += check(f"{key}[{i}].{name}", name, params)
    return problems


def validate_noise(spec: Any, key: str) -> list[str]:
    """Problems of a robustness noise spec (mapping of noise transform → parameters at level 1) at config key
    ``key``; only the physiological noise transforms are allowed and ``p`` / ``fixed_amplitude`` are set by
    :func:`build_noise`. Messages read ``config key '<key>.<transform>': ...``."""
    if not isinstance(spec, Mapping):
        return [f"config key '{key}': must be a mapping of noise transform to parameters, got {type(spec).__name__}; "
                f"valid transforms: {', '.join(NOISE_TRANSFORMS)}"]
    problems = []
    for name, params in spec.items():
        problems += _check_transform(f"{key}.{name}", name, params, NOISE_TRANSFORMS, noise=True)
    return problems


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
    return nn.Sequential(*(_make(TRANSFORMS[name], params, fs) for item in spec for name, params in item.items()))


def build_noise(spec: dict[str, dict], level: float, fs: float, key: str = "noise") -> nn.Sequential:
    """Noise for the robustness protocol: the transforms of ``spec`` (noise transform → parameters at level 1),
    applied in order, each with its ``level_param`` multiplied by ``level``, ``p = 1`` and
    ``fixed_amplitude=True``, so the amplitude is exactly level × base (frequencies, phases and positions stay
    random). ``level == 0`` gives the identity. Raises ValueError for an invalid spec or a negative level."""
    problems = validate_noise(spec, key)
    if not (_is_number(level) and level >= 0):
        problems.append(f"noise level must be a non-negative number, got {level!r}")
    if problems:
        raise ValueError("invalid noise config:\n" + "\n".join(problems))
    if level == 0:
        return nn.Sequential()
    modules = []
    for name, params in spec.items():
        cls = NOISE_TRANSFORMS[name]
        params = dict(params or {})
        base = params.get(cls.level_param, _params(cls)[cls.level_param])
        params[cls.level_param] = float(base) * float(level)
        modules.append(_make(cls, params, fs, p=1.0, fixed_amplitude=True))
    return nn.Sequential(*modules)
