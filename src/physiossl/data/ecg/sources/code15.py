"""CODE-15% (Ribeiro et al.; Zenodo record 4916206, version 1.0.0): download, demo tree, conversion.

Tree layout (the Zenodo files, with the zips extracted)::

    exams.csv                 exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, AF, ST,
                              patient_id, normal_ecg, death, timey, trace_file   (one row per exam)
    exams_part{0..17}.hdf5    ``tracings`` (N, 4096, 12) float32 and ``exam_id`` (N,); one per
                              ``exams_part{k}.zip``; the real parts reportedly end with a padding row
                              (exam_id 0, all-zero tracing)
    SHA256SUMS.txt            optional; written by :func:`download` over the files as fetched

The helpers shared with the CODE test set (:mod:`.codetest`) live here: padding removal
(:func:`valid_spans`, :func:`prepare_records`), amplitude-unit inference (:func:`infer_amplitude_scale`),
the limb-lead check (:func:`check_limb_leads`), resampling (:func:`resampling_ratio`), block reads of an
HDF5 ``tracings`` dataset (:func:`iter_hdf5_records`) and the demo tracings (:func:`demo_tracings`).

Conversion decisions (all recorded in the store attrs and provenance):

- **Matching**: exams are matched between ``exams.csv`` and the HDF5 parts by ``exam_id`` only, never by row
  order. HDF5 rows with ``exam_id`` 0 are padding rows: skipped and counted per part
  (provenance ``hdf5_padding_rows``). Quarantined (``<store>.quarantine.csv``, record = exam_id): an exam in
  an HDF5 part without a CSV row; a CSV row whose ``trace_file`` is absent from the tree or does not hold
  the exam; an exam found in another part than its ``trace_file``; an exam_id on several CSV rows or
  several HDF5 rows (every copy); an exam_id that is not an integer (record = ``exams.csv line N``); invalid
  label values or a missing patient_id; non-finite samples; an all-zero tracing or a lead constant over the
  valid span (``flat record``/``flat lead``, :mod:`._checks`); less than ``min_seconds`` of signal; an amplitude
  above ``max_abs_mv`` after unit scaling (a third-party audit reports a raw record with NaNs and values ~1e38).
- **Padding**: records shorter than 4096 samples are zero-padded on both sides. The valid span of a
  record runs from the first to the last sample at which any lead is non-zero; it is resampled alone
  (``scipy.signal.resample_poly``, 400 Hz → ``fs``) and stored left-aligned, ``lengths`` = its resampled
  length (a full 4096-sample record gives 1024 samples at 100 Hz).
- **Amplitude unit**: sources disagree (mV vs 1e-4 V), so the unit is measured, not assumed:
  :func:`infer_amplitude_scale` (rule :data:`AMPLITUDE_RULE`) on the first ``probe_rows`` usable records of
  every part; parts that disagree fail the conversion. The decision (factor to mV, measured median,
  rule) is stored in attrs ``amplitude_unit`` and in the provenance; ``amplitude_scale=`` overrides it.
- **Lead order**: the files are taken to hold I, II, III, aVR, aVL, aVF, V1–V6 (REFERENCE.md; one copy of the
  dataset README lists DI, DII, DIII, AVL, AVF, AVR). :func:`check_limb_leads` tests the Goldberger relations on the
  probe records; a clear contradiction fails the conversion, the result is in attrs ``lead_check``.
- **Labels and meta**: label set ``all`` = 1dAVb, RBBB, LBBB, SB, AF, ST from the boolean columns;
  ``record_id`` = exam_id, ``patient_id`` from the CSV, ``age``, ``sex`` = M/F from ``is_male``,
  ``source`` = ``code15``; ``fold = 1 + sha256(patient_id) mod 10`` (all exams of a patient share a fold).
  Targets: ``nn_predicted_age``, ``normal_ecg`` (0/1), ``death`` (0/1, NaN where the CSV leaves it empty:
  only a patient's first exam has it) and ``timey`` (years).
- **Order**: records are stored in HDF5 order (parts by number, rows in file order), read in blocks of
  ``block_rows`` rows. Size: the full release at 100 Hz is 345,779 × 12 × 1024 float32 ≈ 17 GB before
  compression.
- **Provenance**: sha256 of ``exams.csv`` and of every part read (hashed in a background thread while the
  conversion runs); when the tree has a ``SHA256SUMS.txt`` the hashes must match it, or the conversion is refused
  before the store is published (docs/data-quality.md).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd
from scipy.signal import resample_poly
from tqdm import tqdm

from ... import checks, hosts
from ...convert import ConversionError, float_or_none, refuse_with_quarantine, settle_quarantine
from ...fetch import CorruptArchiveError, DownloadError, safe_extract_zip
from ...files import atomic_dir, replace_path, sha256_file
from ...sources import register
from .. import synth
from ..store import EcgStoreWriter

log = logging.getLogger(__name__)

NAME = "code15"
SOURCE_VERSION = "1.0.0"
ZENODO_RECORD = "4916206"
#: Base URL of the record's files; ``download`` fetches ``<URL>/exams.csv`` and ``<URL>/exams_part{k}.zip``.
URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files"
N_PARTS = 18
NATIVE_FS = 400
N_RAW_SAMPLES = 4096
N_LEADS = 12
LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")   # as stored in the HDF5
CLASSES = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
CSV_COLUMNS = ("exam_id", "age", "is_male", "nn_predicted_age", *CLASSES, "patient_id", "normal_ecg", "death",
               "timey", "trace_file")
REQUIRED_COLUMNS = ("exam_id", "age", "is_male", *CLASSES, "patient_id", "trace_file")
TARGETS = ("nn_predicted_age", "normal_ecg", "death", "timey")
DEFAULT_NORM_FOLDS = tuple(range(1, 9))
DEFAULT_MIN_SECONDS = 1.0
MAX_ABS_MV = 100.0
BLOCK_ROWS = 32         # rows per HDF5 block read (32 × 4096 × 12 float32 = 6 MiB: a small, fixed transient)
PROBE_ROWS = 256        # records per part measured for the amplitude unit
PROBE_READ_ROWS = 32    # rows per HDF5 read of the probe (32 × 4096 × 12 float32 = 6 MiB)
#: Zenodo publishes md5 checksums only; no hash is pinned here. Pass ``sha256=``/``md5=`` to download() to pin.
_PART = re.compile(r"^exams_part(\d+)\.hdf5$")

#: synth.py statements → CODE classes
SYNTH_TO_CODE = {"1AVB": "1dAVb", "CRBBB": "RBBB", "CLBBB": "LBBB", "SBRAD": "SB", "AFIB": "AF", "STACH": "ST"}


# ============================================================================================ shared helpers
def fold_of(key: str) -> int:
    """``1 + sha256(key) mod 10``: deterministic, independent of the other records."""
    return 1 + int(hashlib.sha256(str(key).encode("utf-8")).hexdigest(), 16) % 10


def resampling_ratio(native: float, fs: float) -> tuple[int, int] | None:
    """(up, down) for ``resample_poly`` from ``native`` to ``fs`` Hz, or None when the rates are equal."""
    ratio = (Fraction(fs).limit_denominator(1000) / Fraction(native).limit_denominator(1000)).limit_denominator(1000)
    return None if ratio == 1 else (ratio.numerator, ratio.denominator)


def resampled_length(n: int, ratio: tuple[int, int] | None) -> int:
    """Length of ``resample_poly`` output for ``n`` input samples."""
    return n if ratio is None else -(-n * ratio[0] // ratio[1])


def valid_spans(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) per record of a (B, T, C) block: from the first to one past the last sample at which
    any lead is non-zero (NaN counts as non-zero); ``start == stop == 0`` for an all-zero record."""
    block = np.asarray(block)
    nonzero = np.any(block != 0, axis=2)
    found = nonzero.any(axis=1)
    n = block.shape[1]
    start = np.where(found, nonzero.argmax(axis=1), 0)
    stop = np.where(found, n - nonzero[:, ::-1].argmax(axis=1), 0)
    return start.astype(np.int64), stop.astype(np.int64)


# ------------------------------------------------------------------------------------------- amplitude unit
AMPLITUDE_REFERENCE_MV = 1.5
AMPLITUDE_WINDOW_S = 2.0
AMPLITUDE_RULE = (
    "m = median over records of the median peak-to-peak amplitude of lead II in consecutive 2 s windows of "
    "the record's valid span (each window holds a QRS complex at heart rates >= 30 bpm); "
    "factor = 10**-round(log10(m / 1.5 mV)): the power of ten that brings m closest, on a log scale, to a "
    "typical lead-II QRS amplitude of 1.5 mV, i.e. into [0.47, 4.7) mV "
    "(factor 1: mV; 0.1: 1e-4 V units; 0.001: uV; 1000: V)")


def qrs_amplitudes(signals, fs: float = NATIVE_FS, lead: int = 1, channel_axis: int = -1) -> np.ndarray:
    """Per record: the median over consecutive ``AMPLITUDE_WINDOW_S`` windows of the valid span of the
    peak-to-peak amplitude of ``lead`` (index in canonical order; 1 = II). NaN where it cannot be measured
    (non-finite samples, all zero, shorter than a quarter window). ``signals``: (N, T, C) (the HDF5 layout)
    or, with ``channel_axis=1``, (N, C, T) (the store layout); a single record may be given without N."""
    x = np.asarray(signals)
    if x.ndim == 2:
        x = x[None]
    x = np.moveaxis(x, channel_axis, -1)
    start, stop = valid_spans(x)
    window = max(int(round(AMPLITUDE_WINDOW_S * fs)), 1)
    out = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        seg = np.asarray(x[i, start[i]:stop[i], lead], dtype=np.float64)
        if seg.size < max(window // 4, 2) or not np.isfinite(seg).all():
            continue
        n_win = seg.size // window
        p2p = np.ptp(seg[: n_win * window].reshape(n_win, window), axis=1) if n_win else np.array([np.ptp(seg)])
        out[i] = float(np.median(p2p))
    return out


def decide_amplitude_scale(amplitudes: Iterable[float]) -> dict:
    """The unit decision for measured per-record amplitudes (see :data:`AMPLITUDE_RULE`)."""
    amps = np.asarray(list(amplitudes), dtype=np.float64)
    amps = amps[np.isfinite(amps) & (amps > 0)]
    if amps.size == 0:
        raise ValueError("no record with a measurable lead-II signal to infer the amplitude unit from")
    median = float(np.median(amps))
    k = -int(round(math.log10(median / AMPLITUDE_REFERENCE_MV)))
    factor = float(10.0 ** k)
    in_mv = median * factor
    lo, hi = AMPLITUDE_REFERENCE_MV / math.sqrt(10), AMPLITUDE_REFERENCE_MV * math.sqrt(10)
    ambiguous = not (lo * 1.25 <= in_mv < hi / 1.25)
    return {
        "factor": factor,
        "raw_unit": _raw_unit(k),
        "median_qrs_p2p_raw": median,
        "median_qrs_p2p_mV": in_mv,
        "n_records": int(amps.size),
        "lead": "II",
        "window_s": AMPLITUDE_WINDOW_S,
        "ambiguous": bool(ambiguous),
        "rule": AMPLITUDE_RULE,
    }


def _raw_unit(k: int) -> str:
    """Name of the raw unit when raw × 10**k = mV, i.e. one raw unit = 10**k mV."""
    return {0: "mV", -1: "1e-4 V", -3: "uV", 3: "V"}.get(k, f"1e{k - 3} V")


def infer_amplitude_scale(signals, fs: float = NATIVE_FS, lead: int = 1, channel_axis: int = -1) -> dict:
    """Measure the typical lead-II QRS peak-to-peak amplitude of ``signals`` and decide the factor to mV.

    ``signals``: (N, T, 12) as in the HDF5 files (``channel_axis=1`` for (N, 12, T)), zero padding allowed.
    Returns ``{"factor", "raw_unit", "median_qrs_p2p_raw", "median_qrs_p2p_mV", "n_records", "lead",
    "window_s", "ambiguous", "rule"}``; ``ambiguous`` is True when the result lies within 25 % of a decade
    boundary of the rule. Raises ValueError when no record can be measured.
    """
    return decide_amplitude_scale(qrs_amplitudes(signals, fs=fs, lead=lead, channel_axis=channel_axis))


# ------------------------------------------------------------------------------------------- lead check
_AUGMENTED = ("aVR", "aVL", "aVF")


def check_limb_leads(records: Iterable[np.ndarray], min_corr: float = 0.95) -> dict:
    """Test the Goldberger relations aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2 on raw records
    ((t, >= 6) arrays, canonical lead positions, valid spans). Channels 3..5 are each matched to the
    derived lead they correlate with best. ``contradiction`` is True only when the matching is a
    permutation other than the canonical one and every matched correlation is at least ``min_corr``
    (devices derive the augmented leads from I and II, so real data give ~1)."""
    sums = np.zeros((3, 3, 5))   # channel c, derived d: Σx, Σy, Σxx, Σyy, Σxy
    n = 0
    for rec in records:
        x = np.asarray(rec, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < 6 or x.shape[0] < 2 or not np.isfinite(x[:, :6]).all():
            continue
        lead_i, lead_ii = x[:, 0], x[:, 1]
        derived = (-(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2)
        for c in range(3):
            ch = x[:, 3 + c]
            for d, y in enumerate(derived):
                sums[c, d] += (ch.sum(), y.sum(), (ch * ch).sum(), (y * y).sum(), (ch * y).sum())
        n += x.shape[0]
    if n < 2:
        return {"checked": False, "reason": "no usable record"}
    sx, sy, sxx, syy, sxy = np.moveaxis(sums, 2, 0)
    cov = sxy / n - (sx / n) * (sy / n)
    var_x = np.maximum(sxx / n - (sx / n) ** 2, 1e-30)
    var_y = np.maximum(syy / n - (sy / n) ** 2, 1e-30)
    corr = cov / np.sqrt(var_x * var_y)
    best = corr.argmax(axis=1)
    matched = corr[np.arange(3), best]
    is_permutation = sorted(best.tolist()) == [0, 1, 2]
    canonical = best.tolist() == [0, 1, 2]
    contradiction = bool(is_permutation and not canonical and (matched >= min_corr).all())
    return {
        "checked": True,
        "relations": "aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2",
        "corr": {_AUGMENTED[c]: {f"derived {_AUGMENTED[d]}": round(float(corr[c, d]), 4) for d in range(3)}
                 for c in range(3)},
        "best_match": {_AUGMENTED[c]: _AUGMENTED[int(best[c])] for c in range(3)},
        "consistent": bool(canonical),
        "contradiction": contradiction,
        "min_corr": min_corr,
        "n_samples": int(n),
    }


# ------------------------------------------------------------------------------------------- records
def prepare_records(block: np.ndarray, rows: Sequence[int], *, factor: float, ratio: tuple[int, int] | None,
                    min_samples: int = 1, max_abs_mv: float = MAX_ABS_MV,
                    native_fs: float = NATIVE_FS) -> dict[int, np.ndarray | str]:
    """Turn rows of a raw (B, T, 12) block into store signals.

    For each index in ``rows``: the valid span (padding removed), scaled by ``factor`` to mV and resampled
    by ``ratio`` as a (12, t) float32 array, or a quarantine reason (str). Spans of equal length are
    resampled together.
    """
    rows = list(rows)
    out: dict[int, np.ndarray | str] = {}
    if not rows:
        return out
    sub = np.asarray(block[rows])
    finite = np.isfinite(sub).all(axis=(1, 2))
    start, stop = valid_spans(sub)
    groups: dict[int, list[int]] = {}
    for j, row in enumerate(rows):
        length = int(stop[j] - start[j])
        if not finite[j]:
            out[row] = f"{int((~np.isfinite(sub[j])).sum())} non-finite samples"
        elif length == 0:
            out[row] = checks.reason_or_refuse("flat_record", "all-zero tracing (no signal)")
        elif length < min_samples:
            out[row] = (f"only {length} samples ({length / native_fs:.2f} s) between the zero padding, "
                        f"less than {min_samples / native_fs:.2f} s")
        else:
            span = sub[j, start[j]:stop[j]]
            try:   # a lead constant over the valid span (the padding at the ends is not a flat lead)
                checks.check_flat(span, LEAD_NAMES, "", unit="valid span", time_axis=0)
            except checks.RecordDefect as exc:
                out[row] = str(exc)
                continue
            peak = float(np.abs(span).max()) * factor
            if peak > max_abs_mv:
                out[row] = f"implausible amplitude {peak:.3g} mV (above {max_abs_mv:g} mV)"
            else:
                groups.setdefault(length, []).append(j)
    for length, members in groups.items():
        x = np.stack([sub[j, start[j]:start[j] + length] for j in members]).astype(np.float64)   # (G, L, 12)
        if ratio is not None:
            x = resample_poly(x, ratio[0], ratio[1], axis=1)
        if factor != 1.0:
            x *= factor
        signals = np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32)
        for g, j in enumerate(members):
            out[rows[j]] = signals[g]
    return out


def open_tracings(path: Path, with_exam_id: bool) -> tuple[int, int, np.ndarray | None]:
    """(rows, samples, exam ids) of an HDF5 file holding ``tracings`` (N, T, 12) (and ``exam_id`` (N,));
    ConversionError naming the file for anything else."""
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise ConversionError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with fh:
        if "tracings" not in fh or not isinstance(fh["tracings"], h5py.Dataset):
            raise ConversionError(f"{path}: no dataset 'tracings' (has {sorted(fh.keys())})")
        tracings = fh["tracings"]
        if tracings.ndim != 3 or tracings.shape[2] != N_LEADS:
            raise ConversionError(f"{path}: 'tracings' has shape {tracings.shape}, expected (N, T, {N_LEADS})")
        if not np.issubdtype(tracings.dtype, np.number):
            raise ConversionError(f"{path}: 'tracings' has dtype {tracings.dtype}, expected float")
        ids = None
        if with_exam_id:
            if "exam_id" not in fh or not isinstance(fh["exam_id"], h5py.Dataset):
                raise ConversionError(f"{path}: no dataset 'exam_id' (has {sorted(fh.keys())})")
            raw = np.asarray(fh["exam_id"][()]).reshape(-1)
            if raw.shape[0] != tracings.shape[0]:
                raise ConversionError(f"{path}: 'exam_id' has {raw.shape[0]} entries, 'tracings' has "
                                      f"{tracings.shape[0]} rows")
            if not np.issubdtype(raw.dtype, np.number):
                raise ConversionError(f"{path}: 'exam_id' has dtype {raw.dtype}, expected integers")
            if not (np.isfinite(raw).all() and (np.asarray(raw, np.float64) == np.round(raw)).all()):
                raise ConversionError(f"{path}: 'exam_id' holds non-integer values")
            ids = raw.astype(np.int64)
        return int(tracings.shape[0]), int(tracings.shape[1]), ids


def iter_hdf5_records(path: Path, rows: Iterable[int], *, block_rows: int = BLOCK_ROWS,
                      **prepare) -> Iterator[tuple[int, np.ndarray | str]]:
    """Yield ``(row, signal or quarantine reason)`` for the given rows of ``path``'s ``tracings``, in row
    order, reading one block of rows at a time (never one record at a time); ``prepare`` goes to
    :func:`prepare_records`."""
    wanted = sorted(set(int(r) for r in rows))
    if not wanted:
        return
    with h5py.File(path, "r") as fh:
        tracings = fh["tracings"]
        i = 0
        while i < len(wanted):
            first = wanted[i]
            block_end = (first // block_rows + 1) * block_rows
            j = i
            while j < len(wanted) and wanted[j] < block_end:
                j += 1
            lo, hi = first, wanted[j - 1] + 1
            try:
                block = tracings[lo:hi]
            except (OSError, ValueError) as exc:
                raise ConversionError(f"{path}: cannot read tracings[{lo}:{hi}] ({exc})") from exc
            result = prepare_records(block, [r - lo for r in wanted[i:j]], **prepare)
            for r in wanted[i:j]:
                yield r, result[r - lo]
            i = j


def probe_records(path: Path, rows: Sequence[int], n: int, *, native_fs: float = NATIVE_FS,
                  n_lead_records: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read the first ``n`` of ``rows`` (one block) and return their lead-II amplitudes
    (:func:`qrs_amplitudes`) and the valid spans (limb leads only) of up to ``n_lead_records`` of them."""
    rows = sorted(int(r) for r in rows)[:n]
    if not rows:
        return np.zeros(0), []
    end = min(rows[-1] + 1, rows[0] + 2 * n)           # within one stretch of at most 2n rows
    rows = [r for r in rows if r < end]
    amps, spans = [], []
    with h5py.File(path, "r") as fh:                   # read PROBE_READ_ROWS at a time: the memory stays small
        tracings = fh["tracings"]
        for i0 in range(0, len(rows), PROBE_READ_ROWS):
            part = rows[i0:i0 + PROBE_READ_ROWS]
            block = np.asarray(tracings[part[0]:part[-1] + 1])[[r - part[0] for r in part]]
            amps.append(qrs_amplitudes(block, fs=native_fs))
            start, stop = valid_spans(block)
            spans += [block[j, start[j]:stop[j], :6].copy() for j in range(min(len(part), n_lead_records - i0))
                      if stop[j] > start[j]]
    return np.concatenate(amps), spans


class BackgroundHasher:
    """sha256 of files computed in a worker thread (hashlib releases the GIL) while a conversion runs."""

    def __init__(self, paths: Iterable[Path]):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._futures = {Path(p): self._pool.submit(sha256_file, Path(p)) for p in paths}

    def result(self) -> dict[Path, str]:
        try:
            return {p: f.result() for p, f in self._futures.items()}
        finally:
            self._pool.shutdown(wait=True)

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_against_sums(raw_dir: Path, hashes: dict[Path, str], dataset: str = NAME) -> str:
    """Compare the hashes computed while converting with ``raw_dir/SHA256SUMS.txt`` when there is one
    (ConversionError naming the files that differ, before the store is published: the same outcome as
    :func:`._checks.verify_tree`, without reading tens of GB twice); returns a one-line summary for the provenance."""
    sums = Path(raw_dir) / "SHA256SUMS.txt"
    if not sums.is_file():
        return checks.verify_tree(raw_dir, dataset)          # logs that the tree is not verified
    listed: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            listed[parts[1].lstrip("*").strip()] = parts[0].lower()
    bad, checked = [], 0
    for path, digest in hashes.items():
        rel = path.relative_to(raw_dir).as_posix()
        if rel in listed:
            checked += 1
            if listed[rel] != digest:
                bad.append(f"{rel}: sha256 {digest}, SHA256SUMS.txt says {listed[rel]}")
    if bad:
        raise checks.sums_refusal(raw_dir, dataset, f"{len(bad)} file(s) changed since they were listed: " +
                                  "; ".join(bad))
    return f"{checked} files match SHA256SUMS.txt"


def find_one(raw_dir: Path, name: str, hint: str) -> Path:
    """``raw_dir/name``, else the shallowest ``name`` below ``raw_dir``; ConversionError if none."""
    raw_dir = Path(raw_dir)
    if (raw_dir / name).is_file():
        return raw_dir / name
    found = sorted(raw_dir.rglob(name), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise ConversionError(f"{raw_dir}: {name} not found ({hint})")
    return found[0]


def sha256sums_text(root: Path) -> str:
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
             for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != "SHA256SUMS.txt"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- demo signals
def demo_tracings(rng: np.random.Generator, n: int, seconds: Sequence[float] = (10, 10, 10, 9, 8, 7),
                  n_samples: int = N_RAW_SAMPLES) -> tuple[np.ndarray, list[synth.EcgSpec]]:
    """(n, n_samples, 12) float32 mV in the CODE layout: synth.py records (500 Hz) resampled to 400 Hz, cut
    to a duration drawn from ``seconds`` and centred with zero padding on both sides. As on the real
    devices, III, aVR, aVL and aVF are derived from I and II (Einthoven and Goldberger)."""
    out = np.zeros((n, n_samples, N_LEADS), dtype=np.float32)
    specs = []
    for i, (record, spec) in enumerate(iter_demo_tracings(rng, n, seconds, n_samples)):
        out[i] = record
        specs.append(spec)
    return out, specs


def iter_demo_tracings(rng: np.random.Generator, n: int, seconds: Sequence[float] = (10, 10, 10, 9, 8, 7),
                       n_samples: int = N_RAW_SAMPLES) -> Iterator[tuple[np.ndarray, synth.EcgSpec]]:
    """The records of :func:`demo_tracings` one at a time ((n_samples, 12) float32 and its spec), with the same
    random draws, so a demo tree of any size is written without holding its tracings."""
    for _ in range(n):
        spec = synth.sample_spec(rng)
        x = synth.synthesize(spec, rng, fs=synth.FS).astype(np.float64)
        lead_i, lead_ii = x[0].copy(), x[1].copy()
        x[2], x[3], x[4], x[5] = lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2
        x = resample_poly(x, 4, 5, axis=1)                                     # 500 → 400 Hz
        length = min(int(round(float(rng.choice(seconds)) * NATIVE_FS)), x.shape[1], n_samples)
        left = (n_samples - length) // 2
        record = np.zeros((n_samples, N_LEADS), dtype=np.float32)
        record[left:left + length] = x[:, :length].T
        yield record, spec


DEMO_COPY_ROWS = 256    # records per block when the demo copies its spilled tracings into an HDF5 part


def _spill_demo_tracings(rng: np.random.Generator, n: int, path: Path, desc: str) -> list[synth.EcgSpec]:
    """Write the records of :func:`iter_demo_tracings` one after the other to ``path`` (raw float32, (n, 4096, 12))
    and return their specs: the demo's tracings on disk, never in memory."""
    specs = []
    with open(path, "wb") as fh:
        for record, spec in tqdm(iter_demo_tracings(rng, n), total=n, desc=desc, unit="rec"):
            fh.write(record.tobytes())
            specs.append(spec)
    return specs


def _write_demo_part(path: Path, spill: Path, members: np.ndarray, ids: np.ndarray, padding_row: bool) -> None:
    """An HDF5 part whose ``tracings`` are the spilled records ``members`` (in that order; plus a zero padding row)
    and whose ``exam_id`` is ``ids`` (plus 0), copied block by block: the same file as writing the whole array."""
    shape = (N_RAW_SAMPLES, N_LEADS)
    size = N_RAW_SAMPLES * N_LEADS
    n = len(members) + int(padding_row)
    with h5py.File(path, "w") as fh, open(spill, "rb") as src:
        tracings = fh.create_dataset("tracings", shape=(n, *shape), dtype="float32")
        for j0 in range(0, len(members), DEMO_COPY_ROWS):
            rows = members[j0:j0 + DEMO_COPY_ROWS]
            block = np.empty((len(rows), *shape), np.float32)
            for k, row in enumerate(rows):
                src.seek(int(row) * size * 4)
                block[k] = np.fromfile(src, dtype=np.float32, count=size).reshape(shape)
            tracings[j0:j0 + len(rows)] = block
        if padding_row:
            tracings[n - 1] = np.zeros(shape, np.float32)
        fh.create_dataset("exam_id", data=np.concatenate([ids, np.zeros(int(padding_row), np.int64)]).astype(np.int64),
                          dtype="int64")


def spec_labels(spec: synth.EcgSpec) -> set[str]:
    return {SYNTH_TO_CODE[s] for s in (spec.rhythm, *spec.morphologies) if s in SYNTH_TO_CODE}


# ============================================================================================ download
def download(out_dir: Path, url: str = URL, progress: bool = True, *, parts: Iterable[int] = range(N_PARTS),
             api: str = hosts.ZENODO_API, verify: bool = True, keep_archives: bool = False) -> Path:
    """Fetch ``exams.csv`` and ``exams_part{k}.zip`` (k in ``parts``) of the Zenodo record that ``url`` names
    (default: record 4916206) and install the tree at ``out_dir``.

    Zenodo's API (``api``) lists the record's files with their size and MD5
    (:func:`physiossl.data.hosts.zenodo_files`); every file is downloaded resumably into
    ``out_dir.parent/.downloads/code15/`` and checked against them (``verify=False`` skips that); each zip is
    extracted safely into a staging tree there and deleted once its ``.hdf5`` is in place (``keep_archives=True``
    keeps it), so a rerun resumes where it stopped. Once every file is present, the API's answer is saved as
    ``HOST_MANIFEST.json``, ``SHA256SUMS.txt`` (the hashes of the files as installed) is written and the staging
    tree replaces ``out_dir`` atomically.
    """
    out_dir = Path(out_dir)
    parts = sorted(set(int(k) for k in parts))
    names = ["exams.csv", *(f"exams_part{k}.hdf5" for k in parts)]
    if out_dir.is_dir() and all((out_dir / n).is_file() for n in names):
        log.info("%s already holds %s; nothing to download", out_dir, ", ".join(names))
        return out_dir
    record = hosts.zenodo_record_id(url)
    if record is None:
        raise DownloadError(f"{url}: not a Zenodo record URL (like {URL}); for a copy on disk use the dataset's "
                            f"mode: local")
    listed, answer = hosts.zenodo_files(record, api)
    wanted = hosts.select(listed, ["exams.csv", *(f"exams_part{k}.zip" for k in parts)], f"Zenodo record {record}")
    remote = {f.path: f for f in wanted}
    cache = out_dir.parent / ".downloads" / NAME
    staging = cache / "tree"
    staging.mkdir(parents=True, exist_ok=True)
    for k in parts:
        target = staging / f"exams_part{k}.hdf5"
        if target.is_file():
            continue
        zip_name = f"exams_part{k}.zip"
        archive = hosts.fetch_files([remote[zip_name]], cache, verify=verify, progress=progress)[zip_name]
        tmp = cache / f".extract-{k}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                safe_extract_zip(archive, tmp)
            except CorruptArchiveError as exc:
                if verify:     # the host's own copy is bad: fetching it again would not help
                    raise CorruptArchiveError(f"{exc} (from {remote[zip_name].url}, matching the host's MD5)") from exc
                archive.unlink(missing_ok=True)
                raise CorruptArchiveError(f"{exc} (from {remote[zip_name].url}; removed so a rerun fetches it "
                                          f"again)") from exc
            found = sorted(tmp.rglob("*.hdf5"))
            exact = [p for p in found if p.name == target.name]
            if len(exact) != 1 and len(found) != 1:
                raise DownloadError(f"{archive}: expected one {target.name} inside, found "
                                    f"{[p.relative_to(tmp).as_posix() for p in found]}")
            os.replace(exact[0] if len(exact) == 1 else found[0], target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archives:
            archive.unlink(missing_ok=True)
    if not (staging / "exams.csv").is_file():
        hosts.fetch_files([remote["exams.csv"]], staging, verify=verify, progress=progress)
    hosts.write_manifest(staging, "zenodo", url, wanted, answer)
    (staging / "SHA256SUMS.txt").write_text(sha256sums_text(staging))
    replace_path(staging, out_dir)
    log.info("installed CODE-15%% parts %s at %s", parts, out_dir)
    return out_dir


# ============================================================================================ demo
def demo(out_dir: Path, n_records: int = 300, seed: int = 0, n_parts: int = 2) -> Path:
    """Write a CODE-15%-format tree of ``n_records`` synthetic exams (seeded): ``exams.csv`` with the real
    columns and ``exams_part{0..n_parts-1}.hdf5`` in the real layout ((N, 4096, 12) float32 mV at 400 Hz,
    7–10 s records centred with zero padding, ``exam_id`` int64). Several exams per patient; the HDF5 rows
    are in another order than the CSV rows; the last part ends with a padding row (exam_id 0, zeros)."""
    rng = np.random.default_rng(seed)
    n_parts = max(1, min(int(n_parts), max(n_records, 1)))
    n_patients = max(1, int(round(n_records / 2.5)))
    patient_of = np.concatenate([np.arange(min(n_patients, n_records)),
                                 rng.integers(0, n_patients, max(n_records - n_patients, 0))])
    rng.shuffle(patient_of)
    patient_ids = 10_000 + rng.choice(900_000, size=n_patients, replace=False)
    exam_ids = 1 + rng.choice(3_000_000, size=n_records, replace=False)
    with atomic_dir(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        # the tracings go to a scratch file as they are drawn (a real part is 3.8 GB) and are copied into the
        # parts in their shuffled order once the rows have been drawn
        spill = tmp / ".tracings.f32"
        specs = _spill_demo_tracings(rng, n_records, spill, "code15 demo")
        part_of = np.sort(np.arange(n_records) % n_parts)
        base_age = rng.integers(18, 90, n_patients)
        first_exam: set[int] = set()
        rows = []
        for i in range(n_records):
            patient = int(patient_of[i])
            labels = spec_labels(specs[i])
            age = int(base_age[patient] + rng.integers(0, 3))
            first = patient not in first_exam
            first_exam.add(patient)
            row = {
                "exam_id": int(exam_ids[i]), "age": age, "is_male": bool(patient % 2 == 0),
                "nn_predicted_age": round(float(age + rng.normal(0, 8)), 4),
                **{c: c in labels for c in CLASSES},
                "patient_id": int(patient_ids[patient]),
                "normal_ecg": bool(specs[i].rhythm == "SR" and not specs[i].morphologies),
                "death": bool(rng.random() < 0.05) if first else None,
                "timey": round(float(rng.uniform(0.5, 8.0)), 4) if first else None,
                "trace_file": f"exams_part{part_of[i]}.hdf5",
            }
            rows.append(row)
        csv_order = rng.permutation(n_records)
        pd.DataFrame([rows[i] for i in csv_order], columns=list(CSV_COLUMNS)).to_csv(tmp / "exams.csv", index=False)
        for k in range(n_parts):
            members = np.flatnonzero(part_of == k)
            members = members[rng.permutation(len(members))]        # another order than the CSV's
            # the last part ends with a padding row (exam_id 0, zeros), as in the real parts
            _write_demo_part(tmp / f"exams_part{k}.hdf5", spill, members, exam_ids[members].astype(np.int64),
                             padding_row=k == n_parts - 1)
        spill.unlink()
        (tmp / "SHA256SUMS.txt").write_text(sha256sums_text(tmp))
    return Path(out_dir)


# ============================================================================================ convert
def _int_id(value) -> int | None:
    """An integer id from a CSV/HDF5 value (int, integral float or digit string); None otherwise."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != round(number):
        return None
    return int(number)


_TRUE = {"true", "1", "1.0", "t", "yes"}
_FALSE = {"false", "0", "0.0", "f", "no"}


def parse_bool(value) -> bool | None:
    """True/False from bools, 0/1 and their spellings; None for missing (NaN, empty); ValueError otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer, float, np.floating)):
        if value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not a boolean")
    text = str(value).strip().lower()
    if text in ("", "nan"):
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")



def tracings_provenance(raw_dir: Path, zenodo_record: str, hashes: dict[Path, str], fs: int,
                        ratio: tuple[int, int] | None, decision: dict, lead_check: dict,
                        min_seconds: float, max_abs_mv: float, dataset: str = NAME) -> dict:
    """The provenance both CODE releases share: files, resampling, padding, amplitude unit, lead check."""
    tree = check_against_sums(raw_dir, hashes, dataset)
    return {
        "raw_dir": str(raw_dir),
        "zenodo_record": zenodo_record,
        "files_sha256": {p.relative_to(raw_dir).as_posix(): h for p, h in hashes.items()},
        "sha256sums": tree,
        "input_checks": checks.provenance(tree),
        "native_fs": NATIVE_FS,
        "resampling": (f"resample_poly {NATIVE_FS} Hz → {fs} Hz (up {ratio[0]}, down {ratio[1]}) of each "
                       f"record's valid span" if ratio else "none"),
        "padding": "zero padding on both sides removed (valid span = first to last sample with any lead "
                   "non-zero); stored left-aligned",
        "amplitude_unit": decision,
        "lead_order": "I, II, III, aVR, aVL, aVF, V1-V6 as stored in the HDF5 tracings",
        "lead_check": lead_check,
        "min_seconds": float(min_seconds),
        "max_abs_mv": float(max_abs_mv),
    }

def read_table(path: Path, columns: Sequence[str], **read_csv) -> pd.DataFrame:
    """A CSV table with the given columns (names stripped); ConversionError naming the file otherwise."""
    try:
        df = checks.read_csv_table(path, **read_csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise ConversionError(f"{path}: unreadable table ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConversionError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def read_exams(path: Path) -> pd.DataFrame:
    return read_table(path, REQUIRED_COLUMNS, dtype={"trace_file": str})


def exam_fields(row: dict) -> tuple[dict, list[str], dict[str, float]]:
    """(meta, labels, targets) of one ``exams.csv`` row; ValueError naming the defect."""
    patient = _int_id(row["patient_id"])
    if patient is None:
        text = "" if pd.isna(row["patient_id"]) else str(row["patient_id"]).strip()
        if not text:
            raise ValueError("missing patient_id")
        patient_id = text
    else:
        patient_id = str(patient)
    labels = []
    for c in CLASSES:
        try:
            value = parse_bool(row[c])
        except ValueError as exc:
            raise checks.defect("unknown_code", f"label column {c}: {exc}") from exc
        if value is None:
            raise ValueError(f"label column {c} is empty")
        if value:
            labels.append(c)
    try:
        male = parse_bool(row["is_male"])
    except ValueError:
        male = None
    targets = {}
    for name in TARGETS:
        if name not in row:
            continue
        if name in ("normal_ecg", "death"):
            try:
                flag = parse_bool(row[name])
            except ValueError:
                flag = None
            targets[name] = float("nan") if flag is None else float(flag)
        else:
            value = float_or_none(row[name])
            targets[name] = float("nan") if value is None else value
    age = float_or_none(row["age"])
    meta = {"patient_id": patient_id, "fold": fold_of(patient_id), "age": age,
            "sex": "" if male is None else ("M" if male else "F"), "source": NAME}
    return meta, labels, targets


def find_parts(raw_dir: Path) -> dict[str, Path]:
    """``exams_part{k}.hdf5`` files below ``raw_dir`` by name, in part order; ConversionError on duplicates."""
    found: dict[str, Path] = {}
    for path in sorted(Path(raw_dir).rglob("exams_part*.hdf5")):
        if not _PART.match(path.name):
            continue
        if path.name in found:
            raise ConversionError(f"{raw_dir}: {path.name} found twice ({found[path.name]} and {path})")
        found[path.name] = path
    return dict(sorted(found.items(), key=lambda kv: int(_PART.match(kv[0]).group(1))))


@register("code15")
def convert(raw_dir: Path, out: Path, fs: int = 100, max_quarantine_fraction: float = 0.01,
            norm_folds: Sequence[int] = DEFAULT_NORM_FOLDS, progress: bool = True, *,
            parts: Iterable[int] | None = None, amplitude_scale: float | None = None,
            min_seconds: float = DEFAULT_MIN_SECONDS, max_abs_mv: float = MAX_ABS_MV,
            block_rows: int = BLOCK_ROWS, probe_rows: int = PROBE_ROWS,
            workers: int = 1) -> dict:
    """CODE-15% tree → ECG store at ``fs`` Hz (see the module docstring for every decision).

    ``parts``: convert only the exams whose ``trace_file`` is one of these parts (the others are out of
    scope and counted, not quarantined). ``amplitude_scale``: the factor to mV, instead of inferring it.
    """
    raw_dir, out = Path(raw_dir), Path(out)
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    if block_rows < 1 or probe_rows < 1:
        raise ValueError("block_rows and probe_rows must be positive")
    csv_path = find_one(raw_dir, "exams.csv", f"is {raw_dir} a CODE-15% tree? `physiossl download code15`")
    exams = read_exams(csv_path)
    all_parts = find_parts(raw_dir)
    selected = None if parts is None else {f"exams_part{int(k)}.hdf5" for k in parts}
    part_files = {n: p for n, p in all_parts.items() if selected is None or n in selected}
    hasher = BackgroundHasher([csv_path, *part_files.values()])
    try:
        summary = _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, exams, csv_path,
                           part_files, selected, amplitude_scale, min_seconds, max_abs_mv, block_rows,
                           probe_rows, hasher, workers)
    except BaseException:
        hasher.cancel()
        raise
    return summary


def _convert(raw_dir, out, fs, max_quarantine_fraction, norm_folds, progress, exams, csv_path, part_files,
             selected, amplitude_scale, min_seconds, max_abs_mv, block_rows, probe_rows, hasher, workers) -> dict:
    # ---- HDF5 index: exam_id → [(part, row)]
    locations: dict[int, list[tuple[str, int]]] = {}
    padding_rows: dict[str, int] = {}
    n_raw = 0
    for name, path in part_files.items():
        n_rows, n_samples_raw, ids = open_tracings(path, with_exam_id=True)
        n_raw = max(n_raw, n_samples_raw)
        padding_rows[name] = int((ids == 0).sum())
        for row in np.flatnonzero(ids != 0):
            locations.setdefault(int(ids[row]), []).append((name, int(row)))
    # ---- CSV index: exam_id → [row]
    quarantine: list[tuple[str, str]] = []
    trace_files = [("" if pd.isna(v) else str(v).strip()) for v in exams["trace_file"]]

    def in_scope(i: int) -> bool:
        return selected is None or trace_files[i] in selected

    csv_rows: dict[int, list[int]] = {}
    for i, value in enumerate(exams["exam_id"]):
        key = _int_id(value)
        if key is None:
            if in_scope(i):
                quarantine.append((f"exams.csv line {i + 2}", f"exam_id {value!r} is not an integer"))
        else:
            csv_rows.setdefault(key, []).append(i)
    keys = sorted({k for k, rs in csv_rows.items() if any(in_scope(i) for i in rs)} | set(locations))
    n_total = len(keys) + len(quarantine)
    n_out_of_scope = sum(1 for rs in csv_rows.values() if not any(in_scope(i) for i in rs))
    if n_total == 0:
        raise ConversionError(f"{raw_dir}: no exams in {csv_path.name} or in the HDF5 parts "
                              f"({', '.join(part_files) or 'none found'})")
    # ---- resolve every exam: plan[part][row] = csv row
    plan: dict[str, dict[int, int]] = {name: {} for name in part_files}
    columns = {c: exams[c].to_numpy() for c in exams.columns}     # row i = {c: columns[c][i]}, no copies
    for key in keys:
        rid, rows, locs = str(key), csv_rows.get(key, []), locations.get(key, [])
        where = ", ".join(f"{n} row {r}" for n, r in locs)
        if len(rows) > 1:
            quarantine.append((rid, f"exam_id on {len(rows)} rows of {csv_path.name} (lines "
                                    f"{', '.join(str(i + 2) for i in rows)})"))
        elif len(locs) > 1:
            quarantine.append((rid, f"exam_id on {len(locs)} HDF5 rows ({where})"))
        elif not rows:
            quarantine.append((rid, f"in {where} but not in {csv_path.name}"))
        elif not locs:
            tf = trace_files[rows[0]]
            if not tf:
                quarantine.append((rid, f"no trace_file in {csv_path.name} and not in any HDF5 part"))
            elif tf not in part_files:
                quarantine.append((rid, f"trace_file {tf} not found under {raw_dir}"))
            else:
                quarantine.append((rid, f"exam_id not found in its trace_file {tf}"))
        elif trace_files[rows[0]] != locs[0][0]:
            quarantine.append((rid, f"{csv_path.name} gives trace_file {trace_files[rows[0]]!r}, but the exam is "
                                    f"in {where}"))
        else:
            plan[locs[0][0]][locs[0][1]] = rows[0]
    if not any(plan.values()):
        raise refuse_with_quarantine(out, quarantine, f"{raw_dir}: none of the {n_total} exams could be matched "
                                                      f"between {csv_path.name} and the HDF5 parts")
    # ---- amplitude unit and lead check, from the first probe_rows planned records of every part
    ratio = resampling_ratio(NATIVE_FS, fs)
    per_part, all_amps, lead_spans = {}, [], []
    for name, rows_of in plan.items():
        if rows_of:
            amps, spans = probe_records(part_files[name], list(rows_of), probe_rows)
            per_part[name] = amps
            all_amps.append(amps)
            lead_spans.extend(spans)
    decision = resolve_amplitude_unit(all_amps, per_part, amplitude_scale, raw_dir)
    lead_check = lead_check_or_fail(lead_spans, raw_dir)
    # ---- stream the parts block by block
    n_planned = sum(len(v) for v in plan.values())
    n_samples = resampled_length(n_raw or N_RAW_SAMPLES, ratio)
    min_samples = max(1, int(math.ceil(min_seconds * NATIVE_FS)))
    norm_folds = set(int(f) for f in norm_folds)
    n_padded = 0
    prepare = {"factor": decision["factor"], "ratio": ratio, "min_samples": min_samples, "max_abs_mv": max_abs_mv}
    with EcgStoreWriter.open(out, capacity=n_planned, n_samples=n_samples, fs=fs,
                             workers=workers) as writer:
        bar = tqdm(total=n_planned, desc=f"code15 → {out.name}", unit="rec", disable=not progress)
        for name, rows_of in plan.items():
            for row, result in iter_hdf5_records(part_files[name], rows_of, block_rows=block_rows, **prepare):
                bar.update(1)
                i = rows_of[row]
                rid = str(_int_id(columns["exam_id"][i]))
                try:
                    meta, labels, targets = exam_fields({c: v[i] for c, v in columns.items()})
                except ValueError as exc:
                    quarantine.append((rid, f"{csv_path.name} line {i + 2}: {exc}"))
                    continue
                if isinstance(result, str):
                    quarantine.append((rid, f"{name} row {row}: {result}"))
                    continue
                if result.shape[1] < resampled_length(n_raw, ratio):
                    n_padded += 1
                writer.append(result, meta={"record_id": rid, **meta}, labels={"all": labels}, targets=targets,
                              norm=meta["fold"] in norm_folds)
        bar.close()
        settle_quarantine(raw_dir, out, quarantine, n_total, max_quarantine_fraction, unit="exams")
        hashes = hasher.result()
        provenance = {
            **tracings_provenance(raw_dir, ZENODO_RECORD, hashes, fs, ratio, decision, lead_check,
                                  min_seconds, max_abs_mv),
            "folds": "1 + sha256(patient_id) mod 10",
            "matching": "exams.csv and the HDF5 parts matched by exam_id",
            "hdf5_padding_rows": padding_rows,
            "parts": list(part_files),
            "exams_out_of_scope": n_out_of_scope,
        }
        writer.finish(
            dataset=NAME, source_version=SOURCE_VERSION, label_sets={"all": list(CLASSES)},
            provenance=provenance, norm_folds=sorted(norm_folds),
            extra_attrs={"amplitude_unit": decision, "native_fs": NATIVE_FS, "lead_check": lead_check,
                         "n_padded": n_padded, "store_order": "HDF5 order: parts by number, rows in file order"},
        )
    summary = {"records": writer.n_records, "quarantined": len(quarantine), "padded": n_padded,
               "amplitude_factor": decision["factor"], "fs": fs, "store": str(out)}
    log.info("converted %s", summary)
    return summary


def resolve_amplitude_unit(all_amps: list[np.ndarray], per_part: dict[str, np.ndarray],
                           amplitude_scale: float | None, raw_dir: Path) -> dict:
    """The unit decision over the probe records; ConversionError when parts disagree or nothing is usable."""
    pooled = np.concatenate(all_amps) if all_amps else np.zeros(0)
    try:
        decision = decide_amplitude_scale(pooled)
    except ValueError as exc:
        if amplitude_scale is None:
            raise ConversionError(f"{raw_dir}: cannot infer the amplitude unit: {exc}") from exc
        decision = {"median_qrs_p2p_raw": None, "n_records": 0, "lead": "II", "window_s": AMPLITUDE_WINDOW_S}
    parts = {}
    for name, amps in per_part.items():
        try:
            parts[name] = decide_amplitude_scale(amps)
        except ValueError:
            continue
    decision["per_part"] = {n: {"median_qrs_p2p_raw": d["median_qrs_p2p_raw"], "factor": d["factor"]}
                            for n, d in parts.items()}
    if amplitude_scale is not None:
        measured = decision.get("median_qrs_p2p_raw")
        decision.update({
            "factor": float(amplitude_scale),
            "raw_unit": f"{float(amplitude_scale) * 1e-3:g} V",
            "median_qrs_p2p_mV": None if measured is None else measured * float(amplitude_scale),
            "ambiguous": False,
            "rule": "given by the caller (amplitude_scale); the measurement is recorded for reference",
        })
        return decision
    factors = {d["factor"] for d in parts.values()}
    if len(factors) > 1:
        detail = ", ".join(f"{n}: median {d['median_qrs_p2p_raw']:.3g} → factor {d['factor']:g}"
                           for n, d in parts.items())
        raise ConversionError(f"{raw_dir}: the HDF5 parts disagree on the amplitude unit ({detail}); pass "
                              f"amplitude_scale= only if one unit is certain")
    if decision["ambiguous"]:
        log.warning("%s: amplitude unit decision is close to a rule boundary (median lead-II QRS %.3g raw → "
                    "factor %g); check attrs amplitude_unit", raw_dir, decision["median_qrs_p2p_raw"],
                    decision["factor"])
    return decision


def lead_check_or_fail(spans: list[np.ndarray], raw_dir: Path) -> dict:
    result = check_limb_leads(spans)
    if result.get("contradiction"):
        raise ConversionError(
            f"{raw_dir}: the limb leads contradict the canonical order I, II, III, aVR, aVL, aVF: channels "
            f"4-6 match {result['best_match']} (correlations {result['corr']}); the files may use another "
            f"lead order")
    if result.get("checked") and not result["consistent"]:
        log.info("%s: limb-lead check inconclusive (%s)", raw_dir, result["best_match"])
    return result
