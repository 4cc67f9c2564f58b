"""The pipeline's one resampler: scipy's polyphase filter (``scipy.signal.resample_poly``, anti-aliased) at the rate
ratio written as a fraction up/down, for whole arrays (:func:`resample`) and for long signals read in blocks
(:func:`iter_resampled_blocks`, the same samples while one block is held at a time).

The ratio ``fs_out / fs_in`` must be a fraction whose denominator is at most 1000 to within 1 ppm (500 → 100 Hz = 1/5,
257 → 100 Hz = 100/257, 44.1 kHz → 8 kHz = 80/441); otherwise :class:`ResampleError`. The filter computes in the
precision of its input (float32 or float64, as scipy does), so a caller states it by the array it passes: the ECG
readers pass their float32 records (CinC 2020 and CODE their float64 physical values), the heart-rate detector float64,
audio float32. :func:`resample` returns float32 unless asked to keep the filter's output.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np

MAX_DENOMINATOR = 1000


class ResampleError(ValueError):
    """Two sampling rates whose ratio the resampler cannot represent."""


def rate_ratio(fs_in: float, fs_out: float, max_denominator: int = MAX_DENOMINATOR) -> Fraction:
    """``fs_out / fs_in`` as a fraction with a denominator of at most ``max_denominator`` (to within 1 ppm)."""
    fs_in, fs_out = float(fs_in), float(fs_out)
    if not (math.isfinite(fs_in) and fs_in > 0 and math.isfinite(fs_out) and fs_out > 0):
        raise ResampleError(f"sampling rates must be positive, got {fs_in:g} Hz → {fs_out:g} Hz")
    exact = fs_out / fs_in
    ratio = Fraction(exact).limit_denominator(max_denominator)
    if abs(float(ratio) - exact) > 1e-6 * exact:
        raise ResampleError(f"cannot resample {fs_in:g} Hz to {fs_out:g} Hz: the ratio {exact:.9g} is not a fraction "
                            f"with a denominator of at most {max_denominator}")
    return ratio


def resampled_length(n: int, fs_in: float, fs_out: float) -> int:
    """The number of samples :func:`resample` makes of ``n`` (``ceil(n * up / down)``)."""
    ratio = rate_ratio(fs_in, fs_out)
    return -(-int(n) * ratio.numerator // ratio.denominator)


def resample(x: np.ndarray, fs_in: float, fs_out: float, axis: int = -1, dtype=np.float32) -> np.ndarray:
    """``x`` resampled along ``axis`` from ``fs_in`` to ``fs_out`` Hz, filtered in ``x``'s precision, returned as
    ``dtype`` (None: the filter's output as it is, or ``x`` itself when the rates are equal)."""
    import scipy.signal

    ratio = rate_ratio(fs_in, fs_out)
    x = np.asarray(x)
    if ratio == 1:
        y = x
    else:
        h = _lowpass(ratio.numerator, ratio.denominator)
        y = scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=axis,
                                       window=h.astype(x.dtype) if x.dtype.kind in "fc" else h)
    return y if dtype is None else y.astype(dtype, copy=False)


@functools.lru_cache(maxsize=64)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The FIR filter ``scipy.signal.resample_poly`` designs for ``up/down`` with its default window (Kaiser, beta 5),
    designed once per ratio: given as ``window``, resample_poly uses it as it would its own design (cast to the
    input's precision, as it casts its own)."""
    import scipy.signal

    max_rate = max(up, down)
    h = scipy.signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def block_margin(fs_in: float, fs_out: float) -> int:
    """Input samples to read beyond each side of a block so that its resampled samples equal those of the whole
    signal: a multiple of the ratio's denominator, beyond the filter's reach (``10 * max(up, down) / up``) and at
    least one second."""
    ratio = rate_ratio(fs_in, fs_out)
    up, down = ratio.numerator, ratio.denominator
    reach = max(2 * (10 * max(up, down) // up + 1), int(fs_in))
    return down * -(-reach // down)


def iter_resampled_blocks(read: Callable[[int, int], np.ndarray], n_in: int, fs_in: float, fs_out: float,
                          block_s: float) -> Iterator[np.ndarray]:
    """A long 1-D signal of ``n_in`` samples, read in blocks of about ``block_s`` seconds (``read(start, n)`` → n
    samples), resampled to ``fs_out`` as consecutive float32 pieces. Each block is read with a margin
    (:func:`block_margin`) on each side, resampled and trimmed, so the concatenated pieces equal resampling the whole
    signal at once, while only one block is held at either rate. Samples are filtered in float32."""
    n_in = int(n_in)
    if n_in <= 0:
        return
    ratio = rate_ratio(fs_in, fs_out)
    if ratio == 1:
        step = max(1, int(block_s * fs_in))
        for s in range(0, n_in, step):
            yield np.asarray(read(s, min(step, n_in - s)), dtype=np.float32)
        return
    up, down = ratio.numerator, ratio.denominator
    n_out = -(-n_in * up // down)
    step = max(down, int(block_s * fs_in) // down * down)
    margin = block_margin(fs_in, fs_out)

    def filtered(start: int, count: int) -> np.ndarray:
        return resample(np.asarray(read(start, count), dtype=np.float32), fs_in, fs_out)

    if step >= n_in:
        yield filtered(0, n_in)[:n_out]
        return
    for s in range(0, n_in, step):
        a, b = max(0, s - margin), min(n_in, s + step + margin)
        y = filtered(a, b - a)
        o0 = s * up // down
        o1 = min(n_out, (s + step) * up // down) if s + step < n_in else n_out
        off = (s - a) * up // down
        yield y[off:off + (o1 - o0)].copy()


def resample_blocks(read: Callable[[int, int], np.ndarray], n_in: int, fs_in: float, fs_out: float,
                    block_s: float) -> np.ndarray:
    """:func:`iter_resampled_blocks` as one float32 array."""
    pieces = list(iter_resampled_blocks(read, n_in, fs_in, fs_out, block_s))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
