"""Frequency read directly from a learned feature series, without labels.

A record's feature series is a 1-D projection of the encoder's feature map (``encoder.features``: (D, T') at
``fs / encoder.stride`` Hz): the series head a method trained for it (SimPer's, saved with the encoder), or else
the first principal component of the feature vectors of the training records' frames (label-free, so any
encoder can be read out the same way). Its dominant frequency is the peak of the power spectrum of the centred,
Hann-windowed, zero-padded series within a search band; the band is clipped to the series' Nyquist frequency,
so an encoder whose features are too coarse in time cannot report frequencies above it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.ecg.loading import SignalCache

Projection = Callable[[torch.Tensor], torch.Tensor]   # (B, D, T') feature maps -> (B, T') series


def dominant_frequency(series: Sequence[np.ndarray], fs: float, band: Sequence[float], pad: int = 8) -> np.ndarray:
    """(N,) peak frequency in Hz of each 1-D series sampled at ``fs`` Hz, searched in ``band`` = (low, high) Hz
    (clipped to the Nyquist frequency fs / 2). The spectrum is taken with ``pad`` times zero padding, so the peak
    is located to fs / (pad · T). NaN for a series with fewer than 4 samples or no power in the band."""
    low, high = float(band[0]), min(float(band[1]), fs / 2)
    if not 0 <= low < high:
        raise ValueError(f"search band {tuple(band)} Hz is empty below the Nyquist frequency {fs / 2:g} Hz "
                         f"of a series sampled at {fs:g} Hz")
    out = np.full(len(series), np.nan)
    for i, s in enumerate(series):
        s = np.asarray(s, dtype=np.float64)
        if len(s) < 4:
            continue
        n = 1 << int(np.ceil(np.log2(pad * len(s))))
        power = np.abs(np.fft.rfft((s - s.mean()) * np.hanning(len(s)), n=n)) ** 2
        freqs = np.fft.rfftfreq(n, d=1.0 / fs)
        keep = (freqs >= low) & (freqs <= high)
        if keep.any() and power[keep].max() > 0:
            out[i] = freqs[keep][np.argmax(power[keep])]
    return out


@torch.no_grad()
def _feature_maps(encoder: nn.Module, cache: SignalCache, device: torch.device, batch_size: int):
    """Yield (record index, (D, frames) feature map of its valid samples) for every record of ``cache``."""
    stride = int(encoder.stride)
    for start in range(0, len(cache), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(cache.data[start:start + batch_size])).to(device)
        maps = encoder.features(x).float().cpu()
        for j, fmap in enumerate(maps):
            frames = int(np.ceil(cache.lengths[start + j] / stride))
            yield start + j, fmap[:, :max(frames, 1)]


def principal_projection(encoder: nn.Module, cache: SignalCache, device: torch.device,
                         batch_size: int = 64) -> Projection:
    """The first principal component of the D-dimensional feature vectors of every frame of ``cache``'s records
    (streamed covariance; no labels used), as a projection of feature maps to series."""
    encoder = encoder.to(device).eval()
    total, outer, count = None, None, 0
    for _, fmap in _feature_maps(encoder, cache, device, batch_size):
        f = fmap.double()
        total = f.sum(1) if total is None else total + f.sum(1)
        outer = f @ f.T if outer is None else outer + f @ f.T
        count += f.shape[1]
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    direction = torch.linalg.eigh(cov).eigenvectors[:, -1].float()
    mean = mean.float()

    def project(maps: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bdt,d->bt", maps - mean[None, :, None].to(maps.device), direction.to(maps.device))
    return project


def head_projection(state_dict: dict) -> Projection:
    """A trained series head (a 1 × 1 convolution from the feature map to one channel) as a projection."""
    weight = state_dict["weight"]
    head = nn.Conv1d(weight.shape[1], weight.shape[0], weight.shape[2])
    head.load_state_dict(state_dict)
    head.eval()

    def project(maps: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return head.to(maps.device)(maps)[:, 0]
    return project


def read_frequencies(encoder: nn.Module, project: Projection, cache: SignalCache, band: Sequence[float],
                     device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, float]:
    """(N,) dominant frequency in Hz of every record's feature series, and the series' sampling rate in Hz."""
    encoder = encoder.to(device).eval()
    fs_series = float(cache.fs) / int(encoder.stride)
    series = [None] * len(cache)
    for i, fmap in _feature_maps(encoder, cache, device, batch_size):
        series[i] = project(fmap[None])[0].numpy()
    return dominant_frequency(series, fs_series, band), fs_series


__all__ = ["dominant_frequency", "head_projection", "principal_projection", "read_frequencies"]
