"""Targets derived from the signal itself: the heart rate of a 12-lead record, in beats per minute.

Rule of :func:`heart_rate` (the constants below hold the numbers):

1. A record shorter than :data:`MIN_SECONDS` is ``"too short"``; non-finite samples in the detection leads
   give ``"non-finite signal"``.
2. The detection leads are :data:`DETECTION_LEADS` (II, V5, V2), analysed in that order. A lead whose
   peak-to-peak amplitude is below :data:`FLAT_MV` mV is skipped; fewer than two others: ``"flat signal"``.
3. Each lead is resampled to :data:`DETECT_FS` Hz (``scipy.signal.resample_poly``) and its R peaks are
   detected with ``wfdb.processing.xqrs_detect``, the QRS detector that wfdb maintains (``gqrs_detect`` is
   marked unsupported; it uses absolute amplitude thresholds and missed beats of low-voltage real records,
   premature beats and short atrial-fibrillation intervals; its local-maximum search runs as
   :func:`local_peaks`, the same decisions without a Python loop over samples, and its filter gains are
   computed once per filter, :func:`filter_gain`). xqrs's matched filter has a fixed
   width in samples: at 100 Hz it favours P and T waves over the narrow QRS complexes of real records, at 250 Hz and
   above it misses the wide complexes of synthetic premature beats. At 200 Hz each detection lead of the
   real PTB-XL, Chapman and CinC fixture records gives the rate of a plain peak count within 2 bpm.
4. A detection that makes an RR interval shorter than :data:`SHORT_RR` x the lead's median RR (a double
   detection on a T wave, or an artifact) is dropped: of the interval's two ends, the one whose removal leaves
   the RR intervals closer to the median of the intervals that are not short. A detection that another
   analysed lead also has, within :data:`CONFIRM_S` s, is a beat and is never dropped: a premature (ectopic)
   beat and the beat before it are both real, and dropping either would lower the rate by one beat's worth.
   This holds where the short interval has the shape of a premature beat: both ends confirmed, the interval
   before it at least :data:`ONTIME_RR` and it plus the next interval at least :data:`PAUSE_RR` x the largest
   median RR of the analysed leads (normal, short, pause); a confirmed detection that merely splits one
   interval (an artifact seen in two leads) is still dropped.
   A lead with at least :data:`MIN_BEATS` beats has the rate 60 / mean RR (s); fewer than two such leads:
   ``"too few beats"``.
5. Two leads agree when their rates differ by at most max(:data:`AGREE_BPM`, :data:`AGREE_FRACTION` x
   their mean rate) and their beats coincide: at least :data:`COINCIDE_FRACTION` of the beats of each lead
   have a beat of the other within min(:data:`COINCIDE_S` s, :data:`COINCIDE_RR` x the shorter median RR),
   a tolerance that allows a detection on the P or S wave of a complex instead of the R peak. Noise in
   every lead gives rates that may agree, but beats that do not coincide. The lead with the most agreeing
   leads (ties: the one nearest the median rate) and those leads form the group; a group of one:
   ``"leads disagree"``. The record's rate is the median of the group's rates. The third lead is analysed
   only when the first two do not agree with rates within max(:data:`EARLY_BPM`, :data:`EARLY_FRACTION` x
   rate); when they do, the record's rate is their mean.
6. A rate outside :data:`RATE_RANGE` bpm is ``"rate out of range"``.

Every NaN comes with one of :data:`REASONS`; :data:`HEART_RATE_METHOD` states the rule in one line (stores
keep it in their attrs).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from typing import Iterator

import numpy as np
import wfdb
from wfdb.processing import xqrs_detect

from ..resample import resample
from . import LEADS

DETECTION_LEADS = ("II", "V5", "V2")
DETECT_FS = 200
MIN_SECONDS = 4.0
FLAT_MV = 0.01
MIN_BEATS = 3
SHORT_RR = 0.5
CONFIRM_S = 0.04
ONTIME_RR, PAUSE_RR = 0.75, 1.5
AGREE_BPM, AGREE_FRACTION = 5.0, 0.10
EARLY_BPM, EARLY_FRACTION = 1.0, 0.02
COINCIDE_S, COINCIDE_RR, COINCIDE_FRACTION = 0.2, 0.3, 0.8
RATE_RANGE = (20.0, 300.0)
REASONS = ("too short", "non-finite signal", "flat signal", "too few beats", "leads disagree", "rate out of range")

HEART_RATE_METHOD = (
    f"wfdb {wfdb.__version__} processing.xqrs_detect at {DETECT_FS} Hz on leads {', '.join(DETECTION_LEADS)}; "
    f"detections making an RR interval < {SHORT_RR:g} x median RR dropped, except premature beats (both ends "
    f"within {CONFIRM_S * 1000:g} ms of another lead's detections, previous interval >= {ONTIME_RR:g} and short + "
    f"next interval >= {PAUSE_RR:g} x the largest median RR of the leads); lead rate = 60 / mean RR "
    f"(>= {MIN_BEATS} beats); record rate = median of the largest group of >= 2 leads whose rates agree within "
    f"max({AGREE_BPM:g} bpm, {AGREE_FRACTION:.0%}) and whose beats coincide (>= {COINCIDE_FRACTION:.0%} within "
    f"min({COINCIDE_S * 1000:g} ms, {COINCIDE_RR:g} x median RR)), the third lead only when the first two differ "
    f"by more than max({EARLY_BPM:g} bpm, {EARLY_FRACTION:.0%}); NaN for records < {MIN_SECONDS:g} s and rates "
    f"outside {RATE_RANGE[0]:g}-{RATE_RANGE[1]:g} bpm"
)

_DETECTION_ROWS = [LEADS.index(lead) for lead in DETECTION_LEADS]


def heart_rate(signal: np.ndarray, fs: float) -> tuple[float, str | None]:
    """Heart rate (bpm) of one record ``signal`` (12, t) in mV, canonical lead order, sampled at ``fs`` Hz.

    Returns ``(rate, None)``, or ``(nan, reason)`` with ``reason`` one of :data:`REASONS` (the rule is in
    the module docstring).
    """
    signal = np.asarray(signal)
    if signal.ndim != 2 or signal.shape[0] != len(LEADS):
        raise ValueError(f"expected a (12, t) signal, got shape {signal.shape}")
    if not fs > 0:
        raise ValueError(f"sampling rate must be positive, got {fs}")
    if signal.shape[1] < MIN_SECONDS * fs:
        return float("nan"), "too short"
    x = signal[_DETECTION_ROWS].astype(np.float64)
    if not np.isfinite(x).all():
        return float("nan"), "non-finite signal"
    analysed = np.ptp(x, axis=1) >= FLAT_MV
    if analysed.sum() < 2:
        return float("nan"), "flat signal"
    leads = resample(x[analysed], fs, DETECT_FS, axis=1, dtype=None)     # one filter for all (row by row equal)
    detections = [_detect(lead) for lead in leads[:2]]
    beats = _beats(detections)
    if len(beats) == 2 and _agree(*beats, tol_bpm=EARLY_BPM, tol_fraction=EARLY_FRACTION):
        rate = float(np.median([_rate(t) for t in beats]))     # what _agreeing_rate gives two agreeing leads
    else:
        if len(leads) > 2:
            detections.append(_detect(leads[2]))
            beats = _beats(detections)
        if len(beats) < 2:
            return float("nan"), "too few beats"
        rate = _agreeing_rate(beats)
    if rate is None:
        return float("nan"), "leads disagree"
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        return float("nan"), "rate out of range"
    return rate, None


def local_peaks(sig: np.ndarray, radius: int) -> np.ndarray:
    """``wfdb.processing.find_local_peaks`` with the same result, vectorised: wfdb scans the samples left to right
    and takes sample ``i`` as a peak when it equals the maximum of ``sig[max(0, i - radius):i + radius]``, then
    skips ``radius`` samples; here the window maxima come from one sliding-maximum filter and the scan visits only
    the samples that are window maxima. Cases the filter does not cover (non-finite samples, a signal shorter than
    ``radius + 1``, ``radius`` < 1) go to wfdb's own loop."""
    from scipy.ndimage import maximum_filter1d
    from wfdb.processing.peaks import find_local_peaks

    sig = np.asarray(sig)
    radius = int(radius)
    if radius < 1 or len(sig) < radius + 1 or sig.dtype.kind != "f" or not np.isfinite(sig).all():
        return find_local_peaks(sig, radius)
    if np.min(sig) == np.max(sig):
        return np.empty(0)
    candidates = np.flatnonzero(sig == maximum_filter1d(sig, size=2 * radius, mode="constant", cval=-np.inf))
    peaks, next_free = [], 0
    for c in candidates.tolist():          # ascending: the first window maximum at or after the sample wfdb reaches
        if c >= next_free:
            peaks.append(c)
            next_free = c + radius
    return np.array(peaks)


@functools.lru_cache(maxsize=32)
def _remembered_gain(b: tuple, a: tuple, f_gain: float, fs: float) -> float:
    from wfdb.processing.basic import get_filter_gain

    return get_filter_gain(np.array(b), np.array(a), f_gain, fs)


def filter_gain(b, a, f_gain: float, fs: float) -> float:
    """``wfdb.processing.get_filter_gain`` (a 512-point frequency response), remembered per filter: xqrs asks for
    the gains of the same two filters for every lead it analyses."""
    return _remembered_gain(tuple(np.atleast_1d(b).tolist()), tuple(np.atleast_1d(a).tolist()), float(f_gain),
                            float(fs))


@functools.lru_cache(maxsize=32)
def _remembered_butter(order: int, band: tuple[float, ...], btype: str) -> tuple[np.ndarray, np.ndarray]:
    import scipy.signal

    b, a = scipy.signal.butter(order, list(band), btype)
    b.setflags(write=False)
    a.setflags(write=False)
    return b, a


class _SignalRememberingFilters:
    """``scipy.signal`` as xqrs sees it, except that ``butter(order, band, btype)`` designs each band-pass once
    (xqrs designs the same 5–20 Hz filter for every lead)."""

    def __getattr__(self, name: str):
        import scipy.signal

        return getattr(scipy.signal, name)

    @staticmethod
    def butter(order, band, btype="low", **kwargs):
        if kwargs:
            import scipy.signal

            return scipy.signal.butter(order, band, btype, **kwargs)
        return _remembered_butter(int(order), tuple(float(f) for f in np.atleast_1d(band)), btype)


@contextlib.contextmanager
def _vectorised_peak_search() -> Iterator[None]:
    """xqrs with :func:`local_peaks`, :func:`filter_gain` and remembered filter designs in place of wfdb's (the
    names its module looks up), for the block: the same detections in a fraction of the time."""
    from wfdb.processing import qrs

    originals = qrs.find_local_peaks, qrs.get_filter_gain, qrs.signal
    qrs.find_local_peaks, qrs.get_filter_gain, qrs.signal = local_peaks, filter_gain, _SignalRememberingFilters()
    try:
        yield
    finally:
        qrs.find_local_peaks, qrs.get_filter_gain, qrs.signal = originals


def _detect(lead: np.ndarray) -> np.ndarray:
    """Sorted detection times (s) of one lead sampled at DETECT_FS, double detections included."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), np.errstate(all="ignore"), \
            _vectorised_peak_search():
        warnings.simplefilter("ignore")
        try:
            peaks = xqrs_detect(lead, fs=DETECT_FS, verbose=False)
        except (ValueError, IndexError, FloatingPointError, ZeroDivisionError):
            return np.zeros(0)
    return np.sort(np.asarray(peaks, dtype=np.float64)) / DETECT_FS


def _beats(detections: list[np.ndarray]) -> list[np.ndarray]:
    """The cleaned beats of the leads with at least MIN_BEATS of them."""
    return [t for t in _clean(detections) if len(t) >= MIN_BEATS]


def _clean(detections: list[np.ndarray]) -> list[np.ndarray]:
    """Each lead's beats: its detections without the short-interval ones, except premature beats that another
    lead confirms. The pause after a premature beat is measured against the largest median RR of the leads (a
    burst of artifacts in one lead shortens that lead's median, not the others')."""
    medians = [np.median(np.diff(d)) for d in detections if len(d) >= 2]
    rr_ref = max(medians) if medians else np.inf
    cleaned = []
    for i, t in enumerate(detections):
        others = np.sort(np.concatenate([d for j, d in enumerate(detections) if j != i] or [np.zeros(0)]))
        cleaned.append(_drop_short_intervals(t, _nearest_distance(t, others) <= CONFIRM_S, rr_ref))
    return cleaned


def _nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a),) distance of each time of ``a`` to the nearest time of sorted ``b`` (inf where ``b`` is empty)."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    idx = np.searchsorted(b, a)
    left = b[np.clip(idx - 1, 0, len(b) - 1)]
    right = b[np.clip(idx, 0, len(b) - 1)]
    return np.minimum(np.abs(a - left), np.abs(a - right))


def _drop_short_intervals(t: np.ndarray, confirmed: np.ndarray | None = None, rr_ref: float = np.inf) -> np.ndarray:
    """Remove, one at a time, detections that make an RR interval shorter than SHORT_RR x the median RR,
    starting with the shortest such interval. A short interval is kept when it looks like a premature beat: both
    its ends ``confirmed`` (bool, like ``t``), the interval before it at least ONTIME_RR x ``rr_ref`` (its first
    beat came on time) and it plus the next interval at least PAUSE_RR x ``rr_ref`` (the pause after the
    premature beat); a detection that splits one interval (a T wave, an artifact) does not."""
    confirmed = np.zeros(len(t), bool) if confirmed is None else np.asarray(confirmed, bool)
    while len(t) > MIN_BEATS:
        rr = np.diff(t)
        short = rr < SHORT_RR * np.median(rr)
        on_time = np.insert(rr[:-1], 0, 0.0) >= ONTIME_RR * rr_ref
        pause = rr + np.append(rr[1:], 0.0) >= PAUSE_RR * rr_ref
        removable = short & ~(confirmed[:-1] & confirmed[1:] & on_time & pause)
        if not removable.any():
            break
        i = int(np.argmin(np.where(removable, rr, np.inf)))
        typical = np.median(rr[~short])
        costs = [np.abs(np.diff(np.delete(t, k)) - typical).sum() for k in (i, i + 1)]
        k = i + int(np.argmin(costs))
        t, confirmed = np.delete(t, k), np.delete(confirmed, k)
    return t


def _coincidence(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the beats of ``a`` with a beat of ``b`` within min(COINCIDE_S, COINCIDE_RR x median RR)."""
    tol = min(COINCIDE_S, COINCIDE_RR * min(np.median(np.diff(a)), np.median(np.diff(b))))
    return float(np.mean(_nearest_distance(a, b) <= tol))


def _rate(t: np.ndarray) -> float:
    return 60.0 / float(np.mean(np.diff(t)))


def _agree(ta: np.ndarray, tb: np.ndarray, tol_bpm: float = AGREE_BPM, tol_fraction: float = AGREE_FRACTION) -> bool:
    ra, rb = _rate(ta), _rate(tb)
    if abs(ra - rb) > max(tol_bpm, tol_fraction * (ra + rb) / 2):
        return False
    return min(_coincidence(ta, tb), _coincidence(tb, ta)) >= COINCIDE_FRACTION


def _agreeing_rate(beats: list[np.ndarray]) -> float | None:
    """Median rate of the largest group of agreeing leads, or None when no two leads agree."""
    rates = np.array([_rate(t) for t in beats])
    n = len(beats)
    partners = [[j for j in range(n) if j != i and _agree(beats[i], beats[j])] for i in range(n)]
    median = np.median(rates)
    best = max(range(n), key=lambda i: (len(partners[i]), -abs(rates[i] - median)))
    if not partners[best]:
        return None
    return float(np.median(rates[[best, *partners[best]]]))
