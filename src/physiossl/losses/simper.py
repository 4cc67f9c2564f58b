"""SimPer (Yang et al., ICLR 2023): similarities of feature time series and the generalised InfoNCE with soft
targets set by the gap between playback speeds.

Conventions:

- A feature time series is the last axis: ``a`` of shape (..., N, T) and ``b`` of shape (..., M, T) (same T,
  broadcastable leading axes) give an (..., N, M) similarity for every pair, computed at once (no loop over pairs).
  A leading batch axis keeps the contrast within each clip: (B, M, T) views of B clips give B separate M × M
  matrices.
- Every series is centred first. Its scale is its population standard deviation sigma (mean of the squared
  centred values), computed from the variance clamped below at ``VAR_EPS``: a constant (zero-variance) series
  has similarity 0 with every series and finite gradients, and a series whose variance is at least ``VAR_EPS``
  is unaffected.
- Computed in at least float32, outside autocast.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ._common import full_precision

VAR_EPS = 1e-8


def _check_series(a: torch.Tensor, b: torch.Tensor, min_len: int = 1) -> int:
    """The common series length T of ``a`` (..., N, T) and ``b`` (..., M, T); ValueError if they do not fit."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1] or a.shape[-1] < min_len:
        raise ValueError(f"expected series of shapes (..., N, T) and (..., M, T) with the same T >= {min_len}, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.shape[-1]


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


@full_precision
def mxcorr(a: torch.Tensor, b: torch.Tensor, circular: bool = False) -> torch.Tensor:
    """Maximum normalised cross-correlation over lags, (..., N, M), for series ``a`` (..., N, T), ``b`` (..., M, T).

    With the centred series a_c, b_c, their population standard deviations sigma_a, sigma_b and T >= 2,

        mxcorr(a, b) = max_l  sum_k a_c[k] b_c[k + l]  /  (sigma_a sigma_b (T - 1)),

    the normalisation of the SimPer reference (its "N - 1" is T - 1, T the series length). The correlation is
    computed for every lag by FFT: ``circular=False`` (the default, as in the SimPer implementation) zero-pads to
    2T, so it is the linear correlation, k over the T - |l| overlapping samples for the lags |l| < T, and a
    shifted series is not wrapped around; ``circular=True`` uses no padding, so k + l is taken modulo T and the
    value is exactly invariant to circular shifts of either series.

    Properties: symmetric (mxcorr(a, b) = mxcorr(b, a)^T); invariant to positive affine maps x -> s x + c, s > 0,
    of either series (while its variance is at least ``VAR_EPS``); in [0, T / (T - 1)]: at most T / (T - 1) by
    Cauchy-Schwarz (sum_k a_c[k] b_c[k + l] <= |a_c| |b_c| = T sigma_a sigma_b), reached for identical series at
    lag 0; at least 0 because the correlations summed over all lags give (sum a_c)(sum b_c) = 0. A constant
    series gives 0.
    """
    t = _check_series(a, b, min_len=2)
    n = t if circular else 2 * t
    a_c, b_c = _centred(a), _centred(b)
    sigma_a = a_c.square().mean(-1).clamp_min(VAR_EPS).sqrt()
    sigma_b = b_c.square().mean(-1).clamp_min(VAR_EPS).sqrt()
    fa, fb = torch.fft.rfft(a_c, n=n), torch.fft.rfft(b_c, n=n)
    corr = torch.fft.irfft(fa.conj()[..., :, None, :] * fb[..., None, :, :], n=n)
    return corr.amax(-1) / (sigma_a[..., :, None] * sigma_b[..., None, :] * (t - 1))


def _power(x: torch.Tensor) -> torch.Tensor:
    """|X_f|^2 of the rfft of the centred series (real and imaginary parts squared: a zero-gradient-safe form)."""
    spectrum = torch.fft.rfft(_centred(x))
    return spectrum.real.square() + spectrum.imag.square()


def band_bins(t: int, fs: float, low: float, high: float) -> torch.Tensor:
    """(T // 2 + 1,) bool: which rfft bins f_k = k fs / T of a ``t``-sample series lie in [low, high] Hz.

    The frequencies are computed as k · fs / T in float64 (``torch.fft.rfftfreq`` returns float32 whatever the
    dtype asked of its input, so a band edge that falls exactly on a bin, e.g. 15 Hz at fs 30 Hz and T = 50,
    would come out as 15.000000954 and drop that bin)."""
    freqs = torch.arange(t // 2 + 1, dtype=torch.float64) * float(fs) / t
    return (freqs >= low) & (freqs <= high)


@full_precision
def npsd(a: torch.Tensor, b: torch.Tensor, fs: float | None = None,
         band: Sequence[float] | None = None) -> torch.Tensor:
    """Normalised power-spectrum similarity, (..., N, M), for series ``a`` (..., N, T), ``b`` (..., M, T).

    P_a(f) = |rfft(a_c)(f)|^2 at the frequencies f = k fs / T, k = 0..T // 2, of the centred series, kept where
    low <= f <= high for ``band`` = (low, high) in Hz with ``fs`` the sampling rate of the feature series in Hz
    (``band=None`` keeps the whole spectrum and ignores ``fs``); then

        npsd(a, b) = <P_a / |P_a|, P_b / |P_b|>   (dot product of the L2-normalised band-limited spectra),

    which lies in [0, 1], is 1 for identical series (or series differing by a shift of a whole number of cycles
    or a positive affine map), ~0 for sinusoids at different frequencies, and ignores power outside the band.
    A series without power in the band (e.g. a constant one) gives 0.
    """
    t = _check_series(a, b)
    pa, pb = _power(a), _power(b)
    if band is not None:
        low, high = float(band[0]), float(band[1])
        if fs is None or not fs > 0 or low > high:
            raise ValueError(f"npsd with a band needs fs > 0 and band (low, high) with low <= high, "
                             f"got fs={fs}, band={tuple(band)}")
        keep = band_bins(t, fs, low, high).to(a.device)
        if not bool(keep.any()):
            raise ValueError(f"no frequency bin of a {t}-sample series at fs={fs} Hz lies in the band {low}-{high} Hz")
        pa, pb = pa[..., keep], pb[..., keep]
    return F.normalize(pa, dim=-1) @ F.normalize(pb, dim=-1).transpose(-1, -2)


SIMILARITIES = ("mxcorr", "npsd")


@full_precision
def simper_loss(z1: torch.Tensor, z2: torch.Tensor, speeds1: torch.Tensor, speeds2: torch.Tensor,
                similarity: str = "mxcorr", temperature: float = 0.1, fs: float | None = None,
                band: Sequence[float] | None = None) -> torch.Tensor:
    """The SimPer generalised InfoNCE with soft targets, a scalar.

    ``z1`` (..., N, T) and ``z2`` (..., M, T) are feature series of views played at speeds ``speeds1`` (..., N)
    and ``speeds2`` (..., M); leading axes (e.g. one per clip) must agree and each clip is contrasted only with
    itself. With the raw similarities as logits (no feature temperature) and soft targets from the speed gaps,

        S_ij = sim(z1_i, z2_j),   W_ij = softmax_j(-|s_i - s'_j| / temperature),
        L = mean over the leading axes and i of  -sum_j W_ij log softmax_j(S_ij),

    ``sim`` being :func:`mxcorr` (linear) or :func:`npsd` (with ``fs`` and ``band``). L is the cross entropy
    from the target distribution W_i. to the predicted distribution softmax(S_i.), so its minimum over S is the
    entropy of W, not 0. When the targets are one-hot (temperature -> 0 with distinct speeds, speeds2 = speeds1)
    W is the identity and L is the ordinary InfoNCE / cross entropy of S with labels i.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; valid: {', '.join(SIMILARITIES)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if (z1.ndim < 2 or z1.shape[:-2] != z2.shape[:-2] or speeds1.shape != z1.shape[:-1]
            or speeds2.shape != z2.shape[:-1]):
        raise ValueError(f"expected z1 (..., N, T), z2 (..., M, T), speeds1 (..., N), speeds2 (..., M) with the "
                         f"same leading axes, got {tuple(z1.shape)}, {tuple(z2.shape)}, {tuple(speeds1.shape)}, "
                         f"{tuple(speeds2.shape)}")
    logits = mxcorr(z1, z2) if similarity == "mxcorr" else npsd(z1, z2, fs, band)
    gap = (speeds1[..., :, None] - speeds2[..., None, :]).abs()
    targets = torch.softmax(-gap.to(logits.dtype) / temperature, dim=-1)
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
