"""Synthetic sleep: hypnograms and stage-dependent breathing sounds, for the offline demo trees of the sleep sources.

:func:`synth_hypnogram` draws a night at 30 s resolution: a few unscored epochs at the start, sleep-onset wake,
sleep cycles (N1 → N2 → N3 → N2 → REM, N3 shrinking and REM growing over the night), brief awakenings and a
final wake. Cycles are ~90 min in a full night and shrink for short recordings so that every stage occurs.

:func:`breathing_audio` renders what a microphone near a sleeper hears. The stage sets the breathing process
(:data:`STAGE_BREATHING`): rate, breath-to-breath regularity and depth (wake: faster, irregular, movement
noises; N1/N2: regular; N3: slow, very regular, deep; REM: irregular rate and amplitude), how often breaths are
snored (a harmonic buzz at 60–150 Hz during inspiration, in runs, most often in N2/N3) and how often apnoeas
and hypopnoeas occur. Every subject (:func:`synth_subject`) has its own baseline rate, loudness, airway
resonance, snoring propensity and pitch, background-noise colour and level and mic gain, so nights differ and
stage differences overlap between subjects: sound-based staging is learnable but not trivial. The breaths are
planned first (:func:`plan_breaths`, which also yields the scored events: apnoeas, hypopnoeas and snore runs)
and then rendered chunk by chunk (:class:`BreathingRenderer`) with filter states carried across chunks, so
memory stays bounded and any chunking gives the same signal.

:func:`ood_noise` renders home-recording noise that a sleep lab does not have (fan hum with harmonics,
traffic-like rumble bursts, TV/speech-like babble, clicks), to mix into the unlabeled home recordings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy import signal

from .stages import UNSCORED

EPOCH_S = 30
CONTROL_HZ = 50          # rate of the envelopes and pitch tracks, linearly interpolated to the audio rate
CHUNK_S = 60             # rendering chunk (a multiple of 1 / CONTROL_HZ)

#: Breathing per stage (W, N1, N2, N3, REM; unscored epochs breathe like wake): rate relative to the subject's
#: baseline, breath-duration coefficient of variation, depth, depth variation, stationary probability that a
#: breath is snored (times the subject's propensity), movement bursts per minute, apnoeas/hypopnoeas per hour
#: (times the subject's apnoea factor), rate modulation depth (slow irregular drift).
STAGE_BREATHING: dict[int, dict[str, float]] = {
    0: dict(rate=1.18, cv=0.24, amp=0.75, amp_cv=0.35, snore=0.00, move=1.6, apnea=0.0, drift=0.10),
    1: dict(rate=1.06, cv=0.13, amp=0.85, amp_cv=0.20, snore=0.12, move=0.45, apnea=4.0, drift=0.05),
    2: dict(rate=1.00, cv=0.07, amp=1.00, amp_cv=0.10, snore=0.45, move=0.08, apnea=7.0, drift=0.02),
    3: dict(rate=0.91, cv=0.035, amp=1.30, amp_cv=0.06, snore=0.60, move=0.02, apnea=2.0, drift=0.01),
    4: dict(rate=1.10, cv=0.22, amp=0.85, amp_cv=0.35, snore=0.15, move=0.30, apnea=12.0, drift=0.18),
}
APNEA_KINDS = ("ObstructiveApnea", "CentralApnea", "MixedApnea", "Hypopnea")
_APNEA_P = (0.45, 0.15, 0.10, 0.30)
SNORE_PERSISTENCE = 0.7   # P(snore | previous breath snored) = q + r (1 - q) for stationary probability q


# --------------------------------------------------------------------------------------------- hypnogram
def synth_hypnogram(n_epochs: int, rng: np.random.Generator, cycle_epochs: int | None = None) -> np.ndarray:
    """A plausible night of ``n_epochs`` 30 s epochs as int8: 0..4 = W, N1, N2, N3, REM; -1 for the few
    unscored epochs at the start. ``cycle_epochs`` (default: 180 = 90 min, shortened so that a recording
    holds at least two cycles, never below 36) sets the sleep-cycle length."""
    n = int(n_epochs)
    if n <= 0:
        return np.zeros(0, dtype=np.int8)
    if cycle_epochs is None:
        cycle_epochs = int(np.clip(n / 2.4, 36, 180))
    n_unscored = int(rng.integers(1, 5))
    out: list[int] = [UNSCORED] * n_unscored
    out += [0] * max(2, int(round(n * rng.uniform(0.03, 0.10))))
    n_cycles = max(1, int(math.ceil((n - len(out)) / cycle_epochs)))
    for k in range(n_cycles):
        late = k / max(n_cycles - 1, 1)
        length = max(10, int(round(cycle_epochs * rng.uniform(0.85, 1.15))))
        shares = np.array([0.06, 0.38 + 0.15 * late, max(0.04, 0.38 - 0.30 * late), 0.06, 0.12 + 0.25 * late])
        shares *= np.exp(rng.normal(0, 0.15, size=5))
        counts = np.maximum(1, np.round(shares / shares.sum() * length)).astype(int)
        for stage, count in zip((1, 2, 3, 2, 4), counts):
            out += [stage] * int(count)
    stages = np.asarray(out[:n], dtype=np.int8)
    if len(stages) < n:
        stages = np.concatenate([stages, np.full(n - len(stages), 2, dtype=np.int8)])
    # light-sleep intrusions into N2, then brief awakenings followed by an N1 epoch, both more frequent late
    late = np.arange(n) / max(n - 1, 1)
    stages[(stages == 2) & (rng.random(n) < 0.04)] = 1
    for i in np.flatnonzero((stages > 0) & (rng.random(n) < 0.012 + 0.02 * late)):
        length = int(rng.integers(1, 4))
        stages[i:i + length] = 0
        if i + length < n and stages[i + length] > 0:
            stages[i + length] = 1
    stages[n - int(rng.integers(1, 5)):] = 0          # final awakening
    stages[:n_unscored] = UNSCORED
    return stages


# --------------------------------------------------------------------------------------------- subjects
def synth_subject(rng: np.random.Generator) -> dict:
    """Per-subject (per-night) acoustics and breathing: see the module docstring."""
    return {
        "rate_bpm": float(rng.uniform(12.0, 18.0)),
        "loudness": float(np.exp(rng.normal(0.0, 0.25))),
        "airway_hz": float(rng.uniform(450.0, 1100.0)),
        "snore_propensity": float(rng.uniform(0.0, 1.0) ** 1.3 * 1.4),
        "snore_f0": float(rng.uniform(60.0, 150.0)),
        "snore_gain": float(rng.uniform(1.0, 3.0)),
        "apnea_factor": float(rng.exponential(1.0)),
        "movement_factor": float(rng.uniform(0.6, 1.5)),
        "noise_level": float(rng.uniform(0.03, 0.12)),
        "noise_colour": float(rng.uniform(0.0, 0.97)),     # one-pole pole: 0 white .. ~1 brown
        "hum_hz": float(rng.choice([50.0, 60.0])),
        "hum_level": float(rng.uniform(0.0, 0.02)),
        "gain": float(np.exp(rng.normal(0.0, 0.3))),
    }


# --------------------------------------------------------------------------------------------- breath plan
@dataclass
class BreathPlan:
    """Breaths (onset s, duration s, inspiratory fraction, depth, snored, snore f0 Hz), movement bursts
    (start s, duration s, amplitude) and scored events (family, type, start s, duration s) of one night."""

    duration_s: float
    onset: np.ndarray
    dur: np.ndarray
    insp: np.ndarray
    amp: np.ndarray
    snore: np.ndarray
    f0: np.ndarray
    moves: np.ndarray
    events: list[tuple[str, str, float, float]] = field(default_factory=list)


def plan_breaths(stages: np.ndarray, rng: np.random.Generator, subject: dict | None = None) -> BreathPlan:
    """Breath-by-breath plan for a night whose 30 s epochs have ``stages`` (-1..4)."""
    subject = synth_subject(rng) if subject is None else subject
    stages = np.asarray(stages, dtype=np.int64)
    n_epochs = len(stages)
    total = float(n_epochs * EPOCH_S)
    breaths: list[tuple[float, float, float, float, bool, float]] = []   # onset, dur, insp, amp, snored, f0
    events: list[tuple[str, str, float, float]] = []
    t, snoring, hypo_until, cooldown_until = float(rng.uniform(0.0, 2.0)), False, -1.0, 0.0
    drift_phase, drift_period = rng.uniform(0, 2 * np.pi), rng.uniform(40.0, 120.0)
    while t < total:
        stage = int(stages[min(int(t // EPOCH_S), n_epochs - 1)])
        p = STAGE_BREATHING[stage if stage >= 0 else 0]
        drift = p["drift"] * math.sin(2 * math.pi * t / drift_period + drift_phase)
        rate = subject["rate_bpm"] * p["rate"] * (1.0 + drift)
        d = float(np.clip(60.0 / rate * math.exp(p["cv"] * rng.normal()), 1.5, 10.0))
        if t >= cooldown_until and rng.random() < p["apnea"] * subject["apnea_factor"] * d / 3600.0:
            kind = str(rng.choice(APNEA_KINDS, p=_APNEA_P))
            length = float(rng.uniform(12.0, 40.0) if kind == "Hypopnea" else rng.uniform(10.0, 35.0))
            length = min(length, total - t)
            events.append(("Respiratory", kind, round(t, 1), round(length, 1)))
            cooldown_until = t + length + 60.0
            if kind == "Hypopnea":
                hypo_until = t + length
            else:
                t += length   # no breath sounds; the next breath is a loud (often snored) recovery breath
                if t >= total:
                    break
                snoring = bool(kind != "CentralApnea" and rng.random() < 0.8)
                breaths.append((t, d, 0.5, subject["loudness"] * p["amp"] * 1.8, snoring,
                                subject["snore_f0"] * math.exp(rng.normal(0, 0.08))))
                t += d
                continue
        q = min(0.95, p["snore"] * subject["snore_propensity"])
        p_snore = q + SNORE_PERSISTENCE * (1 - q) if snoring else q * (1 - SNORE_PERSISTENCE)
        snoring = bool(q > 0 and rng.random() < p_snore)
        a = subject["loudness"] * p["amp"] * math.exp(p["amp_cv"] * rng.normal())
        if t < hypo_until:
            a *= 0.3
        breaths.append((t, d, float(rng.uniform(0.33, 0.45)), a, snoring,
                        subject["snore_f0"] * math.exp(rng.normal(0, 0.08))))
        t += d
    table = np.asarray(breaths, dtype=np.float64).reshape(-1, 6)
    onset_a, dur_a, insp_a, amp_a, f0_a = table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 5]
    snore_a = table[:, 4] > 0.5
    # snore runs (consecutive snored breaths) become Nasal/Snore events spanning their inspirations
    if snore_a.any():
        edges = np.diff(np.concatenate([[0], snore_a.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            start = onset_a[a]
            end = min(onset_a[b - 1] + insp_a[b - 1] * dur_a[b - 1], total)
            events.append(("Nasal", "Snore", round(float(start), 1), round(float(end - start), 1)))
    events.sort(key=lambda e: e[2])
    # movement bursts: Poisson per epoch at the stage's rate
    rates = np.array([STAGE_BREATHING[max(int(s), 0)]["move"] for s in stages]) * subject["movement_factor"]
    counts = rng.poisson(rates * EPOCH_S / 60.0)
    n_moves = int(counts.sum())
    starts = np.repeat(np.arange(n_epochs) * EPOCH_S, counts) + rng.uniform(0, EPOCH_S, n_moves)
    moves = np.stack([starts, rng.uniform(0.3, 3.0, n_moves), np.exp(rng.normal(0.3, 0.5, n_moves))], axis=1) \
        if n_moves else np.zeros((0, 3))
    return BreathPlan(total, onset_a, dur_a, insp_a, amp_a, snore_a, f0_a, moves, events)


# --------------------------------------------------------------------------------------------- rendering
def _unit_sos(sos: np.ndarray) -> np.ndarray:
    """Scale an SOS filter so that unit-variance white noise comes out with unit variance."""
    impulse = np.zeros(8192)
    impulse[0] = 1.0
    h = signal.sosfilt(sos, impulse)
    sos = np.array(sos, dtype=np.float64)
    sos[0, :3] /= math.sqrt(float(np.sum(h * h)))
    return sos


def _band(lo: float, hi: float, fs: float, order: int = 1) -> np.ndarray:
    nyq = fs / 2.0
    hi = min(hi, 0.45 * fs)
    lo = min(lo, 0.5 * hi)
    return _unit_sos(signal.butter(order, [lo / nyq, hi / nyq], btype="bandpass", output="sos"))


def _lowpass(fc: float, fs: float, order: int = 1) -> np.ndarray:
    return _unit_sos(signal.butter(order, min(fc, 0.45 * fs) / (fs / 2.0), btype="lowpass", output="sos"))


class _Filter:
    """An SOS filter whose state carries over from one chunk to the next (float32 in, float32 out)."""

    def __init__(self, sos: np.ndarray):
        self.sos = sos.astype(np.float32)
        self.zi = np.zeros((sos.shape[0], 2), dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y, self.zi = signal.sosfilt(self.sos, x, zi=self.zi)
        return y.astype(np.float32, copy=False)


class _Control:
    """Control tracks sampled at :data:`CONTROL_HZ`, interpolated linearly to audio samples chunk by chunk."""

    def __init__(self, fs: float):
        self.fs = float(fs)
        ratio = self.fs / CONTROL_HZ
        self.k = int(round(ratio)) if abs(ratio - round(ratio)) < 1e-9 else None

    def interp(self, track: np.ndarray, start: int, n: int, base: float = 0.0) -> np.ndarray:
        """``track - base`` at samples ``start .. start + n - 1`` (float32)."""
        if self.k is not None and start % self.k == 0:
            j0, m = start // self.k, -(-n // self.k)
            c = track[j0:j0 + m + 1]
            if len(c) < m + 1:
                c = np.concatenate([c, np.full(m + 1 - len(c), track[-1], dtype=track.dtype)])
            c = (c - base).astype(np.float32) if base else c.astype(np.float32, copy=False)
            w = np.arange(self.k, dtype=np.float32) / np.float32(self.k)
            return (c[:-1, None] + (c[1:] - c[:-1])[:, None] * w).ravel()[:n]
        times = (start + np.arange(n)) * (CONTROL_HZ / self.fs)
        return (np.interp(times, np.arange(len(track)), track) - base).astype(np.float32)


def _phase_track(f0: np.ndarray) -> np.ndarray:
    """Cumulative phase (cycles, float64) of a pitch track sampled at :data:`CONTROL_HZ`."""
    f0 = np.asarray(f0, dtype=np.float64)
    steps = 0.5 * (f0[1:] + f0[:-1]) / CONTROL_HZ
    return np.concatenate([[0.0], np.cumsum(steps)])


def _pulses(frac: np.ndarray, width: float) -> np.ndarray:
    """A Gaussian glottal-like pulse per cycle (``frac``: phase within the cycle), zero mean."""
    z = (frac - np.float32(0.5)) * np.float32(1.0 / width)
    return np.exp(np.square(z) * np.float32(-0.5)) - np.float32(width * math.sqrt(2 * math.pi))


def _cycle_phase(control: "_Control", phase: np.ndarray, start: int, n: int) -> np.ndarray:
    """Phase within the cycle (0..1, float32) of the samples ``start .. start + n - 1``."""
    base = float(np.floor(np.interp(start * CONTROL_HZ / control.fs, np.arange(len(phase)), phase)))
    p = control.interp(phase, start, n, base=base)
    return p - np.floor(p)


def _tile(table: np.ndarray, start: int, n: int) -> np.ndarray:
    """``n`` samples of a periodic waveform (one period in ``table``) from sample ``start`` on."""
    period = len(table)
    offset = start % period
    reps = -(-(offset + n) // period)
    return np.tile(table, reps)[offset:offset + n]


def _chunks(n_samples: int, fs: float) -> Iterator[tuple[int, int]]:
    step = max(1, int(round(CHUNK_S * fs)))
    for s in range(0, n_samples, step):
        yield s, min(step, n_samples - s)


class BreathingRenderer:
    """Render a :class:`BreathPlan` at ``fs`` Hz in consecutive chunks (:meth:`next`): components ``breath``
    (turbulent inspiration and softer, darker expiration), ``snore`` (harmonic buzz), ``movement`` (rustling
    bursts) and ``background`` (coloured noise and mains hum)."""

    def __init__(self, plan: BreathPlan, fs: float, rng: np.random.Generator, subject: dict):
        self.plan, self.fs, self.rng, self.subject = plan, float(fs), rng, subject
        self.n_samples = int(round(plan.duration_s * self.fs))
        self.pos = 0
        self.control = _Control(self.fs)
        n_ctrl = int(math.ceil(plan.duration_s * CONTROL_HZ)) + 2
        tc = np.arange(n_ctrl) / CONTROL_HZ
        self.insp_env, self.exp_env, self.snore_env, self.f0 = _breath_tracks(plan, tc, subject)
        self.move_env = _burst_track(plan.moves, tc)
        self.phase = _phase_track(self.f0)
        airway = subject["airway_hz"]
        self.f_hi = _Filter(_band(0.4 * airway, 2.2 * airway, self.fs, order=1))
        self.f_lo = _Filter(_band(80.0, 0.8 * airway, self.fs, order=1))
        self.f_move = _Filter(_lowpass(600.0, self.fs, order=1))
        pole = subject["noise_colour"]
        self.f_bg = _Filter(np.array([[math.sqrt(1 - pole * pole), 0, 0, 1, -pole, 0]]))
        period = max(2, int(round(self.fs / subject["hum_hz"])))
        self.hum = (subject["hum_level"] * np.sin(2 * np.pi * np.arange(period) / period
                                                  + rng.uniform(0, 2 * np.pi))).astype(np.float32)

    def _active(self, track: np.ndarray, start: int, n: int) -> bool:
        """Whether a control track is non-zero anywhere in the samples ``start .. start + n - 1``."""
        j0 = int(start * CONTROL_HZ // self.fs)
        return bool(track[j0:int(math.ceil((start + n) * CONTROL_HZ / self.fs)) + 2].any())

    def next(self, n: int) -> dict[str, np.ndarray]:
        """The next ``n`` samples of every component (float32)."""
        s, rng, sub = self.pos, self.rng, self.subject
        self.pos += n
        white = rng.standard_normal(n, dtype=np.float32)
        ie, ee = self.control.interp(self.insp_env, s, n), self.control.interp(self.exp_env, s, n)
        breath = ie * self.f_hi(white) + ee * self.f_lo(white)
        zeros = np.zeros(n, dtype=np.float32)
        snore = movement = zeros
        if self._active(self.snore_env, s, n):
            se = self.control.interp(self.snore_env, s, n)
            buzz = _pulses(_cycle_phase(self.control, self.phase, s, n), 0.09)
            snore = se * (buzz * np.float32(3.0 * sub["snore_gain"]) + white * np.float32(0.3))
        if self._active(self.move_env, s, n):
            noise = self.f_move(rng.standard_normal(n, dtype=np.float32))
            movement = self.control.interp(self.move_env, s, n) * noise
        background = self.f_bg(rng.standard_normal(n, dtype=np.float32)) * np.float32(sub["noise_level"])
        background += _tile(self.hum, s, n)
        return {"breath": breath, "snore": snore, "movement": movement, "background": background}


def _breath_tracks(plan: BreathPlan, tc: np.ndarray, subject: dict) -> tuple[np.ndarray, ...]:
    """Inspiratory and expiratory envelopes, snore envelope and snore pitch at the control times ``tc``."""
    zeros = np.zeros(len(tc), dtype=np.float32)
    if len(plan.onset) == 0:
        return zeros, zeros.copy(), zeros.copy(), np.full(len(tc), subject["snore_f0"], dtype=np.float32)
    idx = np.clip(np.searchsorted(plan.onset, tc, side="right") - 1, 0, len(plan.onset) - 1)
    before = tc < plan.onset[0]
    u = (tc - plan.onset[idx]) / plan.dur[idx]
    ins = plan.insp[idx]
    exf = np.minimum(0.5, 1.0 - ins)
    amp = np.where(before, 0.0, plan.amp[idx])
    insp_env = np.where((u >= 0) & (u < ins), np.sin(np.pi * np.clip(u / ins, 0, 1)) ** 2, 0.0) * amp
    e = (u - ins) / exf
    exp_env = np.where((e >= 0) & (e < 1), 0.5 * np.sin(np.pi * np.clip(e, 0, 1)) ** 2, 0.0) * amp
    snore_env = insp_env * plan.snore[idx]
    f0 = plan.f0[idx] * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * tc))
    return (insp_env.astype(np.float32), exp_env.astype(np.float32), snore_env.astype(np.float32),
            f0.astype(np.float32))


def _burst_track(bursts: np.ndarray, tc: np.ndarray) -> np.ndarray:
    """Sum of raised-cosine bursts (start s, duration s, amplitude) at the control times ``tc``."""
    env = np.zeros(len(tc), dtype=np.float64)
    for start, length, amplitude in bursts:
        j0, j1 = int(start * CONTROL_HZ), int(math.ceil((start + length) * CONTROL_HZ)) + 1
        j1 = min(j1, len(tc))
        if j0 >= j1:
            continue
        x = (tc[j0:j1] - start) / length
        env[j0:j1] += amplitude * np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 2, 0.0)
    return env.astype(np.float32)


def airflow(plan: BreathPlan, fs: float, subject: dict, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Nasal airflow of the planned breaths at ``fs`` Hz (inspiration positive, expiration negative), float32;
    samples ``start:stop`` of the night only (the same values as slicing the whole night's airflow)."""
    n = int(round(plan.duration_s * fs))
    stop = n if stop is None else min(int(stop), n)
    t = np.arange(min(int(start), stop), stop) / float(fs)
    insp, exp, _, _ = _breath_tracks(plan, t, subject)
    return insp - exp


#: Component weights of the ambient (room) microphone and of the tracheal microphone.
MIC_MIX = {"breath": 0.5, "snore": 1.0, "movement": 0.8, "background": 1.0}
TRACHEAL_MIX = {"breath": 2.0, "snore": 1.5, "movement": 0.3, "background": 0.15}
OUTPUT_SCALE = 0.05       # typical RMS of a rendered night


def render_breathing(plan: BreathPlan, fs: float, rng: np.random.Generator, subject: dict,
                     mixes: dict[str, dict[str, float]] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Yield consecutive chunks of the night as ``{mix name: float32 samples}`` (default one mix, ``mic``);
    each mix is a weighted sum of the components times the subject's mic gain."""
    mixes = {"mic": MIC_MIX} if mixes is None else mixes
    renderer = BreathingRenderer(plan, fs, rng, subject)
    scale = np.float32(OUTPUT_SCALE * subject["gain"])
    for _, n in _chunks(renderer.n_samples, fs):
        parts = renderer.next(n)
        yield {name: sum(np.float32(w) * parts[c] for c, w in weights.items()) * scale
               for name, weights in mixes.items()}


def breathing_audio(stages: np.ndarray, fs: int, rng: np.random.Generator, subject: dict | None = None,
                    plan: BreathPlan | None = None) -> np.ndarray:
    """Mono room-microphone audio of a night whose epochs have ``stages``: float32 (E * 30 * fs,)."""
    subject = synth_subject(rng) if subject is None else subject
    plan = plan_breaths(stages, rng, subject) if plan is None else plan
    chunks = [c["mic"] for c in render_breathing(plan, fs, rng, subject)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------- home noise
class OodNoiseRenderer:
    """Home-recording noise rendered chunk by chunk (:meth:`next`), roughly unit RMS while sources are active:
    a fan (hum with harmonics and broadband whoosh), traffic-like rumble bursts, TV/speech-like babble
    (band-limited noise and a voiced buzz under a syllabic envelope, in programme segments) and clicks."""

    def __init__(self, n_samples: int, fs: float, rng: np.random.Generator):
        self.n_samples, self.fs, self.rng = int(n_samples), float(fs), rng
        self.pos = 0
        duration = self.n_samples / self.fs
        self.control = _Control(self.fs)
        tc = np.arange(int(math.ceil(duration * CONTROL_HZ)) + 2) / CONTROL_HZ
        # fan: one period of a harmonic hum (integer period so it tiles), plus low-passed whoosh
        self.fan_level = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.8 else 0.0
        period = max(2, int(round(self.fs / rng.uniform(40.0, 120.0))))
        k = np.arange(period) / period
        harmonics = [h for h in range(1, 9) if h * self.fs / period < 0.45 * self.fs]
        wave = sum(h ** -1.2 * np.sin(2 * np.pi * h * k + rng.uniform(0, 2 * np.pi)) for h in harmonics)
        self.fan_wave = (wave / (np.std(wave) + 1e-12)).astype(np.float32)
        self.f_fan = _Filter(_lowpass(float(rng.uniform(300.0, 1500.0)), self.fs, order=1))
        self.fan_mod = (1.0 + 0.1 * np.sin(2 * np.pi * tc / rng.uniform(5, 30))).astype(np.float32)
        # traffic rumble: bursts of 3-15 s at ~1 per minute
        n_rumble = rng.poisson(duration / 60.0)
        self.rumble_env = _burst_track(np.stack([rng.uniform(0, duration, n_rumble), rng.uniform(3, 15, n_rumble),
                                                 rng.uniform(0.5, 3.0, n_rumble)], axis=1)
                                       if n_rumble else np.zeros((0, 3)), tc)
        self.f_rumble = _Filter(_lowpass(float(rng.uniform(60.0, 200.0)), self.fs, order=2))
        # babble: programme segments of 1-8 min, syllables at ~5 Hz with pauses
        on = np.zeros(len(tc), dtype=np.float32)
        t = float(rng.uniform(0, 120))
        while t < duration:
            length = float(rng.uniform(60, 480))
            if rng.random() < 0.5:
                on[int(t * CONTROL_HZ):int((t + length) * CONTROL_HZ)] = rng.uniform(0.4, 1.5)
            t += length + float(rng.uniform(30, 300))
        n_syl = int(duration * 5) + 2
        syl = rng.gamma(2.0, 0.5, n_syl) * (rng.random(n_syl) > 0.3)
        syllables = np.interp(tc * 5.0, np.arange(n_syl), syl)
        self.babble_env = (on * syllables).astype(np.float32)
        self.babble_phase = _phase_track(np.interp(tc * 5.0, np.arange(n_syl), rng.uniform(110, 230, n_syl)))
        self.f_babble = _Filter(_band(300.0, 3400.0, self.fs, order=2))
        self.f_voice = _Filter(_band(200.0, 2500.0, self.fs, order=1))
        # clicks: ~2 per minute, 5-30 ms decaying bursts
        n_clicks = rng.poisson(2.0 * duration / 60.0)
        self.clicks = np.stack([np.sort(rng.uniform(0, duration, n_clicks)), rng.uniform(0.005, 0.03, n_clicks),
                                rng.uniform(1.0, 6.0, n_clicks)], axis=1) if n_clicks else np.zeros((0, 3))

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` samples (float32)."""
        s, rng = self.pos, self.rng
        self.pos += n
        out = np.zeros(n, dtype=np.float32)
        if self.fan_level:
            hum = _tile(self.fan_wave, s, n)
            whoosh = self.f_fan(rng.standard_normal(n, dtype=np.float32))
            out += np.float32(self.fan_level) * self.control.interp(self.fan_mod, s, n) * (0.6 * hum + whoosh)
        rumble = self.control.interp(self.rumble_env, s, n)
        if rumble.any():
            out += rumble * self.f_rumble(rng.standard_normal(n, dtype=np.float32))
        babble = self.control.interp(self.babble_env, s, n)
        if babble.any():
            buzz = _pulses(_cycle_phase(self.control, self.babble_phase, s, n), 0.06)
            out += babble * (self.f_babble(rng.standard_normal(n, dtype=np.float32)) + 2.0 * self.f_voice(buzz))
        self._add_clicks(out, s)
        return out

    def _add_clicks(self, out: np.ndarray, s: int) -> None:
        """Add the clicks that start in (or just before) the chunk ``out`` beginning at sample ``s``."""
        if not len(self.clicks):
            return
        t0, t1 = s / self.fs, (s + len(out)) / self.fs
        for start, length, amplitude in self.clicks[(self.clicks[:, 0] >= t0 - 0.05) & (self.clicks[:, 0] < t1)]:
            a = int(round(start * self.fs)) - s
            m = max(1, int(length * self.fs))
            lo, hi = max(a, 0), min(a + m, len(out))
            if lo < hi:
                burst = amplitude * np.exp(-5.0 * np.arange(m) / m) * self.rng.standard_normal(m)
                out[lo:hi] += burst[lo - a:hi - a].astype(np.float32)


def ood_noise(n_samples: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """Out-of-distribution home-recording noise, float32 (n_samples,), roughly unit RMS while active."""
    renderer = OodNoiseRenderer(n_samples, fs, rng)
    chunks = [renderer.next(n) for _, n in _chunks(int(n_samples), fs)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
