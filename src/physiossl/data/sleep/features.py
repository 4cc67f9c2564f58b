"""Audio for sleep staging: reading, mono mixing, resampling and log-mel features per 30 s epoch.

The feature parameters come from the config section ``sleep.features`` (:data:`FEATURE_KEYS`), e.g. the
published PSG-Audio pipeline's ``{"audio_fs": 8000, "n_mels": 48, "n_fft": 256, "win": 200, "hop": 160,
"fmin": 30, "fmax": 3900}``. Every 30 s epoch is framed on its own (no centring, no frame straddles two
epochs), so an epoch always has :func:`frames_per_epoch` frames. A frame is windowed by a periodic Hann
window of ``win`` samples centred in ``n_fft`` (zero-padded), its power spectrum goes through librosa's
Slaney mel filterbank (``htk=False, norm="slaney"``) and the result is ``10 * log10(max(power, 1e-10))``
dB (reference power 1, no top-dB clipping): exactly ``librosa.feature.melspectrogram(center=False,
power=2.0, window="hann", ...)`` followed by that conversion.
"""

from __future__ import annotations

import functools
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np

FEATURE_KEYS = ("audio_fs", "n_mels", "n_fft", "win", "hop", "fmin", "fmax")
INT_KEYS = ("audio_fs", "n_mels", "n_fft", "win", "hop")
EPOCH_S = 30
AMIN = 1e-10                 # power floor before the logarithm (librosa's ``amin``)
_BLOCK_BYTES = 64 << 20      # bound on the framed samples of one block of epochs


class AudioError(ValueError):
    """An audio file cannot be read, or a signal cannot be processed as asked."""


# --------------------------------------------------------------------------------------------- parameters
def check_features(features: dict, key: str = "sleep.features") -> list[str]:
    """Problems with a log-mel parameter set, each naming the config key; empty when it is usable."""
    if not isinstance(features, dict):
        return [f"{key}: expected a mapping of {', '.join(FEATURE_KEYS)}, got {type(features).__name__}"]
    problems = []
    missing = [k for k in FEATURE_KEYS if k not in features]
    unknown = sorted(set(features) - set(FEATURE_KEYS))
    if missing:
        problems.append(f"{key}: missing {', '.join(missing)}")
    if unknown:
        problems.append(f"{key}: unknown {', '.join(map(str, unknown))} (allowed: {', '.join(FEATURE_KEYS)})")
    values = {}
    for k in FEATURE_KEYS:
        if k not in features:
            continue
        v = features[k]
        if k in INT_KEYS:
            ok = isinstance(v, Integral) and not isinstance(v, bool) and v >= 1
            if not ok:
                problems.append(f"{key}.{k}: must be a positive integer, got {v!r}")
                continue
        else:
            ok = isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
            if not ok:
                problems.append(f"{key}.{k}: must be a non-negative number of Hz, got {v!r}")
                continue
        values[k] = v
    if problems:
        return problems
    fs, n_fft = values["audio_fs"], values["n_fft"]
    if values["win"] > n_fft:
        problems.append(f"{key}.win: window of {values['win']} samples is longer than {key}.n_fft = {n_fft}")
    if values["fmax"] > fs / 2:
        problems.append(f"{key}.fmax: {values['fmax']} Hz is above the Nyquist frequency {fs / 2:g} Hz "
                        f"of {key}.audio_fs = {fs}")
    if values["fmin"] >= values["fmax"]:
        problems.append(f"{key}.fmin: {values['fmin']} Hz is not below {key}.fmax = {values['fmax']} Hz")
    if n_fft > EPOCH_S * fs:
        problems.append(f"{key}.n_fft: {n_fft} samples is longer than a {EPOCH_S} s epoch at {fs} Hz")
    if not problems:
        fb = mel_filterbank(fs, n_fft, values["n_mels"], float(values["fmin"]), float(values["fmax"]))
        empty = np.flatnonzero(fb.max(axis=1) <= 0)
        if len(empty):
            problems.append(f"{key}.n_mels: {len(empty)} of {values['n_mels']} mel bands cover no FFT bin "
                            f"(n_fft {n_fft} at {fs} Hz resolves {fs / n_fft:g} Hz); use fewer mels or a "
                            f"larger n_fft")
    return problems


def _checked(features: dict, key: str = "sleep.features") -> dict:
    problems = check_features(features, key)
    if problems:
        raise ValueError("; ".join(problems))
    return {k: (int(features[k]) if k in INT_KEYS else float(features[k])) for k in FEATURE_KEYS}


def frames_per_epoch(features: dict, epoch_s: int = EPOCH_S) -> int:
    """Frames of one epoch without centring: ``1 + (epoch_samples - n_fft) // hop``."""
    f = _checked(features)
    samples = int(epoch_s) * f["audio_fs"]
    if samples < f["n_fft"]:
        raise ValueError(f"an epoch of {epoch_s} s at {f['audio_fs']} Hz is shorter than n_fft = {f['n_fft']}")
    return 1 + (samples - f["n_fft"]) // f["hop"]


def feature_attrs(features: dict, epoch_s: int = EPOCH_S) -> dict:
    """The store's ``feature`` attribute: the parameters plus what is needed to recompute the features.

    ``{"type": "log-mel", "scale": "dB", "amin": 1e-10, "mel": "slaney", "norm": "slaney",
    "window": "hann", "center": False, "epoch_s": 30, "frames": <frames per epoch>, audio_fs, n_mels, n_fft,
    win, hop, fmin, fmax}`` (integers for the sample counts, floats for fmin/fmax).
    """
    f = _checked(features)
    return {"type": "log-mel", "scale": "dB", "amin": AMIN, "mel": "slaney", "norm": "slaney",
            "window": "hann", "center": False, "epoch_s": int(epoch_s), **f,
            "frames": frames_per_epoch(f, epoch_s)}


def features_from_attrs(attrs: dict) -> dict:
    """The parameter set (:data:`FEATURE_KEYS`) of a store's ``feature`` attribute."""
    missing = [k for k in FEATURE_KEYS if k not in attrs]
    if missing:
        raise ValueError(f"feature attribute lacks {', '.join(missing)}")
    return {k: attrs[k] for k in FEATURE_KEYS}


@functools.lru_cache(maxsize=16)
def mel_filterbank(audio_fs: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's Slaney mel filterbank, float32 (n_mels, n_fft // 2 + 1), read-only, cached per parameter set."""
    import librosa

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Empty filters.*")
        fb = librosa.filters.mel(sr=audio_fs, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                 dtype=np.float32)
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=16)
def _hann(win: int) -> np.ndarray:
    import scipy.signal  # here, not at the top: checking a config imports this module

    w = scipy.signal.get_window("hann", win, fftbins=True).astype(np.float32)
    w.setflags(write=False)
    return w


# --------------------------------------------------------------------------------------------- signals
def mix_channels(channels: list[np.ndarray]) -> np.ndarray:
    """The mono mix (mean) of equal-length 1-D signals, float32."""
    if len(channels) == 0:
        raise AudioError("no audio channel to mix")
    arrays = [np.asarray(c) for c in channels]
    shapes = [a.shape for a in arrays]
    if any(a.ndim != 1 for a in arrays):
        raise AudioError(f"channels to mix must be 1-D signals, got shapes {shapes}")
    if len({s[0] for s in shapes}) != 1:
        raise AudioError(f"channels to mix differ in length: {[s[0] for s in shapes]} samples")
    if len(arrays) == 1:
        return arrays[0].astype(np.float32, copy=False)
    out = np.zeros(shapes[0], np.float64)
    for a in arrays:
        out += a
    return (out / len(arrays)).astype(np.float32)


def epoch_features(audio: np.ndarray, features: dict, epoch_s: int = EPOCH_S) -> np.ndarray:
    """Log-mel features (E, n_mels, frames) float32 of the E = len(audio) // (epoch_s * audio_fs) complete
    epochs of a mono signal at ``features["audio_fs"]``; a trailing partial epoch is dropped."""
    import scipy.fft

    f = _checked(features)
    x = np.asarray(audio)
    if x.ndim != 1:
        raise AudioError(f"epoch_features expects a mono 1-D signal, got shape {x.shape}")
    fs, n_fft, win, hop, n_mels = f["audio_fs"], f["n_fft"], f["win"], f["hop"], f["n_mels"]
    epoch_samples = int(epoch_s) * fs
    n_frames = frames_per_epoch(f, epoch_s)
    n_epochs = len(x) // epoch_samples
    out = np.empty((n_epochs, n_mels, n_frames), np.float32)
    if n_epochs == 0:
        return out
    fb_t = np.ascontiguousarray(mel_filterbank(fs, n_fft, n_mels, f["fmin"], f["fmax"]).T)
    window = _hann(win)
    # the window sits centred in n_fft; zero padding around it only shifts the phase, so each frame is the
    # win samples under the window, transformed with n = n_fft
    lpad = (n_fft - win) // 2
    block = max(1, _BLOCK_BYTES // (n_frames * n_fft * 4))
    for b0 in range(0, n_epochs, block):
        b1 = min(b0 + block, n_epochs)
        seg = x[b0 * epoch_samples:b1 * epoch_samples].astype(np.float32, copy=False).reshape(b1 - b0, epoch_samples)
        frames = np.lib.stride_tricks.sliding_window_view(seg[:, lpad:], win, axis=1)[:, ::hop][:, :n_frames]
        spec = scipy.fft.rfft(frames * window, n=n_fft, axis=-1)
        power = np.square(spec.real) + np.square(spec.imag)
        mel = power.reshape(-1, power.shape[-1]) @ fb_t
        np.maximum(mel, AMIN, out=mel)
        np.log10(mel, out=mel)
        mel *= 10.0
        out[b0:b1] = mel.reshape(b1 - b0, n_frames, n_mels).transpose(0, 2, 1)
    return out


# --------------------------------------------------------------------------------------------- files
def read_audio_file(path: str | Path) -> tuple[np.ndarray, float]:
    """Samples (n_samples, n_channels) float32 in [-1, 1] and the sampling rate of a WAV, FLAC or OGG file."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        data, fs = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, OSError) as e:   # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(f"{path}: cannot read audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples")
    return np.ascontiguousarray(data), float(fs)
