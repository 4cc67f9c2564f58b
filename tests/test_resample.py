"""The one resampler (physiossl.data.resample): rate ratios, whole arrays, and blocks that equal the whole."""

from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import resample_poly

from physiossl.data.resample import (
    ResampleError,
    block_margin,
    rate_ratio,
    resample,
    resample_blocks,
    resampled_length,
)


@pytest.mark.parametrize("fs_in, fs_out, ratio", [
    (500, 100, Fraction(1, 5)), (257, 100, Fraction(100, 257)), (400, 100, Fraction(1, 4)),
    (400, 250, Fraction(5, 8)), (1000, 100, Fraction(1, 10)), (44100, 8000, Fraction(80, 441)),
    (48000, 8000, Fraction(1, 6)), (8000.0, 8000, Fraction(1)), (100, 500, Fraction(5)),
])
def test_rate_ratio(fs_in, fs_out, ratio):
    assert rate_ratio(fs_in, fs_out) == ratio


@pytest.mark.parametrize("fs_in, fs_out", [(47999.37, 8000), (0, 100), (100, -1), (float("nan"), 100)])
def test_rate_ratio_refuses_what_it_cannot_represent(fs_in, fs_out):
    with pytest.raises(ResampleError, match="Hz"):
        rate_ratio(fs_in, fs_out)
    with pytest.raises(ValueError):          # a ResampleError is a ValueError: the sources quarantine it
        resample(np.zeros(10), fs_in, fs_out)


def test_resample_is_resample_poly_in_the_input_precision_along_the_axis():
    x = np.random.default_rng(0).standard_normal((12, 5000)).astype(np.float32)
    y = resample(x, 500, 100, axis=1)
    assert y.dtype == np.float32 and y.shape == (12, resampled_length(5000, 500, 100)) == (12, 1000)
    np.testing.assert_array_equal(y, resample_poly(x, 1, 5, axis=1))
    y64 = resample(x.astype(np.float64), 257, 100, axis=1, dtype=None)
    assert y64.dtype == np.float64 and y64.shape[1] == resampled_length(5000, 257, 100)
    np.testing.assert_array_equal(y64, resample_poly(x.astype(np.float64), 100, 257, axis=1))
    np.testing.assert_array_equal(resample(x.astype(np.float64), 257, 100, axis=1), y64.astype(np.float32))


def test_equal_rates_keep_the_samples():
    x = np.arange(10, dtype=np.float64)
    np.testing.assert_array_equal(resample(x, 8000.0, 8000), x.astype(np.float32))
    assert resample(x, 100, 100, dtype=None) is x


def _peak_hz(x, fs):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / fs)[spectrum.argmax()]


@pytest.mark.parametrize("fs_in, fs_out", [(48000, 8000), (44100, 8000), (8000, 16000)])
def test_resample_keeps_tone_frequency(fs_in, fs_out):
    t = np.arange(2 * fs_in) / fs_in
    x = np.sin(2 * np.pi * 440.0 * t)
    y = resample(x, fs_in, fs_out)
    assert abs(len(y) - len(x) * fs_out / fs_in) <= 1
    assert abs(_peak_hz(y, fs_out) - 440.0) <= 1.0
    stereo = resample(np.stack([x, x], axis=1), float(fs_in), fs_out, axis=0)
    assert stereo.shape == (len(y), 2)


@pytest.mark.parametrize("fs_in, fs_out, n", [(48000, 2000, 48000 * 5 + 17), (44100, 8000, 44100 * 3 + 5),
                                              (4000, 8000, 4000 * 4 + 3), (2000, 2000, 9001)])
def test_resample_blocks_equals_resampling_at_once(fs_in, fs_out, n):
    x = np.random.default_rng(0).standard_normal(n)
    reads = []

    def read(start, count):
        reads.append(count)
        return x[start:start + count]

    y = resample_blocks(read, n, fs_in, fs_out, block_s=1)
    expected = resample(x.astype(np.float32), fs_in, fs_out)
    assert y.dtype == np.float32 and len(y) == len(expected) == resampled_length(n, fs_in, fs_out)
    np.testing.assert_allclose(y, expected, atol=2e-5)
    assert max(reads) < n                                            # never the whole signal at once
    if fs_in != fs_out:
        assert block_margin(fs_in, fs_out) % rate_ratio(fs_in, fs_out).denominator == 0


@pytest.mark.parametrize("rates", [(100, 200), (500, 100), (257, 100), (44100, 8000), (100, 500)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_remembered_filter_gives_scipys_own_samples(rates, dtype):
    """The filter designed once per ratio gives resample_poly's output with its own design, bit for bit."""
    fs_in, fs_out = rates
    ratio = rate_ratio(fs_in, fs_out)
    x = (np.random.default_rng(0).normal(size=(3, 2003)) * 1000).astype(dtype)
    expected = resample_poly(x, ratio.numerator, ratio.denominator, axis=1)
    got = resample(x, fs_in, fs_out, axis=1, dtype=None)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
