"""What the two CODE releases of Ribeiro et al. share (:mod:`.code15`, CODE-15%, and :mod:`.codetest`, the CODE test
set): HDF5 ``tracings`` of (N, 4096, 12) float32 at 400 Hz, zero-padded on both sides, in an amplitude unit the
releases disagree on, and their CSV tables.

Padding removal (:func:`valid_spans`, :func:`prepare_records`), amplitude-unit inference
(:func:`infer_amplitude_scale`, :func:`resolve_amplitude_unit`), the limb-lead check (:func:`check_limb_leads`),
block reads of a ``tracings`` dataset (:func:`iter_hdf5_records`, :func:`probe_records`), table reading and checksums,
the provenance both write (:func:`tracings_provenance`) and the demo tracings (:func:`demo_tracings`). The decisions
are described with the conversion of :mod:`.code15`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd

from ... import checks
from ...convert import ConversionError
from ...files import sha256_file
from ...resample import rate_ratio, resample
from .. import synth

log = logging.getLogger(__name__)

NATIVE_FS = 400


N_RAW_SAMPLES = 4096


N_LEADS = 12


LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")   # as stored in the HDF5


CLASSES = ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")


DEFAULT_MIN_SECONDS = 1.0


MAX_ABS_MV = 100.0


BLOCK_ROWS = 32         # rows per HDF5 block read (32 × 4096 × 12 float32 = 6 MiB: a small, fixed transient)


PROBE_ROWS = 256        # records per part measured for the amplitude unit


PROBE_READ_ROWS = 32    # rows per HDF5 read of the probe (32 × 4096 × 12 float32 = 6 MiB)


#: synth.py statements → CODE classes
SYNTH_TO_CODE = {"1AVB": "1dAVb", "CRBBB": "RBBB", "CLBBB": "LBBB", "SBRAD": "SB", "AFIB": "AF", "STACH": "ST"}


# ============================================================================================ shared helpers
def fold_of(key: str) -> int:
    """``1 + sha256(key) mod 10``: deterministic, independent of the other records."""
    return 1 + int(hashlib.sha256(str(key).encode("utf-8")).hexdigest(), 16) % 10


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
def prepare_records(block: np.ndarray, rows: Sequence[int], *, factor: float, fs: float,
                    min_samples: int = 1, max_abs_mv: float = MAX_ABS_MV,
                    native_fs: float = NATIVE_FS) -> dict[int, np.ndarray | str]:
    """Turn rows of a raw (B, T, 12) block into store signals.

    For each index in ``rows``: the valid span (padding removed), scaled by ``factor`` to mV and resampled
    to ``fs`` Hz as a (12, t) float32 array, or a quarantine reason (str). Spans of equal length are
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
        x = resample(x, native_fs, fs, axis=1, dtype=None)
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


def check_against_sums(raw_dir: Path, hashes: dict[Path, str], dataset: str) -> str:
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
        x = resample(x, synth.FS, NATIVE_FS, axis=1, dtype=None)
        length = min(int(round(float(rng.choice(seconds)) * NATIVE_FS)), x.shape[1], n_samples)
        left = (n_samples - length) // 2
        record = np.zeros((n_samples, N_LEADS), dtype=np.float32)
        record[left:left + length] = x[:, :length].T
        yield record, spec


def spec_labels(spec: synth.EcgSpec) -> set[str]:
    return {SYNTH_TO_CODE[s] for s in (spec.rhythm, *spec.morphologies) if s in SYNTH_TO_CODE}


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


def tracings_provenance(raw_dir: Path, zenodo_record: str, hashes: dict[Path, str], fs: int, decision: dict,
                        lead_check: dict, min_seconds: float, max_abs_mv: float, dataset: str) -> dict:
    """The provenance both CODE releases share: files, resampling, padding, amplitude unit, lead check."""
    tree = check_against_sums(raw_dir, hashes, dataset)
    ratio = rate_ratio(NATIVE_FS, fs)
    return {
        "raw_dir": str(raw_dir),
        "zenodo_record": zenodo_record,
        "files_sha256": {p.relative_to(raw_dir).as_posix(): h for p, h in hashes.items()},
        "sha256sums": tree,
        "input_checks": checks.provenance(tree),
        "native_fs": NATIVE_FS,
        "resampling": (f"resample_poly {NATIVE_FS} Hz → {fs} Hz (up {ratio.numerator}, down "
                       f"{ratio.denominator}) of each record's valid span" if ratio != 1 else "none"),
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
