"""Synthetic 12-lead ECG with learnable structure, for the offline demo trees of every ECG source.

Each beat is a sum of Gaussian waves (P, Q, R, S, R', T) with lead-specific amplitudes; rhythm statements
set the RR-interval process (regular, slow, fast, irregular without P waves, respiratory modulation) and
morphology statements change wave amplitudes, widths and timings in the leads where a clinician would
look for them. Baseline wander, mains interference and white noise make the views non-trivial. Signals
are synthesised at 500 Hz in mV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FS = 500
DURATION_S = 10.0

#                  I     II    III   aVR   aVL   aVF   V1    V2    V3    V4    V5    V6
_P = np.array([0.10, 0.15, 0.05, -0.12, 0.03, 0.10, 0.05, 0.08, 0.08, 0.08, 0.08, 0.07])
_Q = np.array([-0.04, -0.05, -0.02, 0.00, -0.03, -0.03, 0.00, 0.00, 0.00, -0.04, -0.07, -0.07])
_R = np.array([0.60, 1.00, 0.40, -0.75, 0.30, 0.70, 0.20, 0.50, 0.80, 1.20, 1.30, 1.00])
_S = np.array([-0.10, -0.20, -0.20, 0.10, -0.10, -0.20, -0.90, -1.20, -0.80, -0.40, -0.20, -0.10])
_T = np.array([0.20, 0.30, 0.10, -0.25, 0.10, 0.20, -0.05, 0.30, 0.40, 0.40, 0.30, 0.25])
INFERIOR = [1, 2, 5]
LATERAL = [0, 4, 10, 11]
SEPTAL = [6, 7]

RHYTHMS = ("SR", "SBRAD", "STACH", "AFIB", "SARRH")
MORPHOLOGIES = ("IMI", "LVH", "CLBBB", "CRBBB", "1AVB", "LVOLT", "NDT", "PVC")
_RATE = {"SR": (60, 100), "SBRAD": (40, 59), "STACH": (101, 150), "AFIB": (70, 140), "SARRH": (60, 90)}


@dataclass
class EcgSpec:
    rhythm: str
    morphologies: tuple[str, ...]
    heart_rate: float


def sample_spec(rng: np.random.Generator) -> EcgSpec:
    rhythm = rng.choice(RHYTHMS, p=[0.5, 0.12, 0.12, 0.16, 0.10])
    n_morph = rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15])
    morph = tuple(sorted(str(m) for m in rng.choice(MORPHOLOGIES, size=n_morph, replace=False))) if n_morph else ()
    if "CLBBB" in morph and "CRBBB" in morph:
        morph = tuple(m for m in morph if m != "CRBBB")
    lo, hi = _RATE[rhythm]
    return EcgSpec(str(rhythm), morph, float(rng.uniform(lo, hi)))


def _beat_times(spec: EcgSpec, rng: np.random.Generator) -> np.ndarray:
    rr = 60.0 / spec.heart_rate
    times, t = [], float(rng.uniform(0.1, rr))
    while t < DURATION_S + 0.5:
        times.append(t)
        if spec.rhythm == "AFIB":
            t += rr * rng.uniform(0.6, 1.4)
        elif spec.rhythm == "SARRH":
            t += rr * (1.0 + 0.18 * np.sin(2 * np.pi * t / 4.0)) + rng.normal(0, 0.01)
        else:
            t += rr + rng.normal(0, 0.01 * rr)
    return np.asarray(times)


def synthesize(spec: EcgSpec, rng: np.random.Generator, fs: int = FS, *, beats: np.ndarray | None = None,
               ectopic: np.ndarray | None = None) -> np.ndarray:
    """One record, (12, fs * 10) float32 in mV. ``beats`` (s) replaces the beat times that the rhythm would draw
    and ``ectopic`` (bool, one per beat) the beats that ``PVC`` would make ventricular (wide, no P wave)."""
    n = int(fs * DURATION_S)
    t = np.arange(n) / fs
    scale = rng.uniform(0.8, 1.2) * np.exp(rng.normal(0, 0.1, 12))
    amp = {k: v * scale for k, v in {"P": _P, "Q": _Q, "R": _R, "S": _S, "T": _T}.items()}
    amp["R2"] = np.zeros(12)
    width = {"P": 0.025, "Q": 0.010, "R": 0.012, "S": 0.012, "R2": 0.012, "T": 0.05}
    pr, m = 0.16, set(spec.morphologies)
    if "1AVB" in m:
        pr = rng.uniform(0.25, 0.32)
    if "LVH" in m:
        for lead in LATERAL:
            amp["R"][lead] *= 2.2
        for lead in SEPTAL:
            amp["S"][lead] *= 2.0
        for lead in (10, 11):
            amp["T"][lead] *= -0.6
    if "IMI" in m:
        for lead in INFERIOR:
            amp["Q"][lead] = -0.45 * scale[lead]
            amp["T"][lead] = -abs(amp["T"][lead])
        width["Q"] = 0.02
    if "CLBBB" in m:
        width.update(R=0.035, S=0.035)
        amp["R"][[6, 7]] *= 0.1
        amp["S"][[6, 7]] *= 1.6
        amp["T"][[0, 4, 10, 11]] *= -1.0
    if "CRBBB" in m:
        width.update(S=0.03)
        amp["R2"][[6, 7]] = 0.7 * scale[[6, 7]]
        amp["S"][[0, 10, 11]] *= 3.0
    if "NDT" in m:
        amp["T"] *= -0.7
    if "LVOLT" in m:
        for k in amp:
            amp[k][:6] *= 0.35
    offsets = {"P": -pr, "Q": -0.03, "R": 0.0, "S": 0.03, "R2": 0.07, "T": 0.0}
    beats = _beat_times(spec, rng) if beats is None else np.asarray(beats, dtype=np.float64)
    rr = 60.0 / spec.heart_rate
    qt = 0.28 * np.sqrt(rr)
    pvc = np.zeros(len(beats), bool)
    if ectopic is not None:
        pvc = np.asarray(ectopic, bool)
    elif "PVC" in m:
        pvc[rng.choice(len(beats), size=max(1, len(beats) // 5), replace=False)] = True
    centres, widths, amps = [], [], []
    for b, is_pvc in zip(beats, pvc):
        for wave in ("P", "Q", "R", "S", "R2", "T"):
            if wave == "P" and (spec.rhythm == "AFIB" or is_pvc):
                continue
            a, w, c = amp[wave], width[wave], b + offsets[wave]
            if wave == "T":
                c = b + qt
            if is_pvc:
                w = w * 3.0
                a = -1.3 * a if wave in ("R", "T") else a
            centres.append(c)
            widths.append(w)
            amps.append(a)
    centres, widths, amps = np.asarray(centres), np.asarray(widths), np.asarray(amps)
    gauss = np.exp(-0.5 * ((t[None, :] - centres[:, None]) / widths[:, None]) ** 2)
    x = amps.T @ gauss
    if spec.rhythm == "AFIB":
        f = rng.uniform(4, 8)
        x += 0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))[None, :] * rng.uniform(0.5, 1.5, (12, 1))
    wander_f = rng.uniform(0.1, 0.4)
    x += rng.uniform(0.02, 0.15) * np.sin(2 * np.pi * wander_f * t + rng.uniform(0, 6.3, (12, 1)))
    x += 0.01 * np.sin(2 * np.pi * 50.0 * t)[None, :] * rng.uniform(0, 1)
    x += rng.normal(0, 0.015, x.shape)
    x += _artifacts(rng, n, fs)
    return x.astype(np.float32)


def _artifacts(rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """Transient artifacts as in real recordings (electrode pops, motion bursts): a few short,
    large deflections at random times in random leads, unrelated to any statement."""
    out = np.zeros((12, n))
    for _ in range(rng.poisson(3.0)):
        length = int(rng.uniform(0.05, 0.4) * fs)
        start = int(rng.integers(0, n - length))
        leads = rng.random(12) < 0.4
        if rng.random() < 0.5:   # electrode pop: a step that decays
            shape = np.exp(-np.arange(length) / (0.3 * length))
        else:                    # motion burst: windowed broadband noise
            shape = np.hanning(length) * rng.normal(0, 1, length)
        out[leads, start:start + length] += rng.uniform(0.5, 2.0) * rng.choice([-1, 1]) * shape
    return out
