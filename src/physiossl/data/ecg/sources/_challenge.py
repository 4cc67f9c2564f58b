"""Reader of PhysioNet-challenge-format ECG records: ``<name>.hea`` + ``<name>.mat``.

Used by the PhysioNet/CinC Challenges 2020 and 2021 and by the Chapman–Shaoxing WFDB release
(``ecg-arrhythmia``, records ``JSxxxxx``). The ``.mat`` file is a MATLAB v4 file holding one int16 matrix
``val`` of shape (n_sig, T) in digital units; the header's signal lines use format ``16+24`` (format 16
with a 24-byte offset, i.e. the v4 header), so WFDB tools read the same bytes. Header comments carry the
demographics and labels::

    HR06000 12 500 5000 04-Jun-2020 15:11:55
    HR06000.mat 16+24 1000/mv 16 0 10 23323 0 I
    ...
    #Age: 59
    #Sex: Female
    #Dx: 164934002,426783006

:func:`read_challenge_record` reads with ``wfdb.rdrecord`` first. Some genuine headers are rejected by
wfdb (a record line with a time and a date after the sample count, e.g. ``11:39:16 05-Feb-2020``, or the
record name written with its ``.mat`` suffix, as Georgia's headers do: ``E00001.mat 12 500 5000 ...``); for
those the header is parsed here and ``val`` is read with ``scipy.io.loadmat``, converting
``(digital - baseline) / gain`` the way wfdb does (float64, then float32). wfdb reads ``16+24`` as raw
int16 after 24 bytes without looking at the MATLAB header, so its result is used only when the .mat is
exactly a v4 int16 ``val`` of the header's shape; any other .mat (double values, v5, extra bytes) goes
through ``loadmat`` too. Both paths apply the same checks and return the same values: the sample count of the
header against the data, the header's checksums against the digital samples, non-finite samples and flat leads
(:mod:`._checks`). Every defect is a ``ValueError`` whose message names the file and the problem, so a converter
can quarantine the record.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import wfdb

from ... import checks
from .. import LEADS

log = logging.getLogger(__name__)

_LEAD_ALIASES = {name.upper(): name for name in LEADS}
_UNIT_SCALE = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}   # → mV
_WFDB_INVALID_16 = -32768      # WFDB format 16's "no sample" value (wfdb reads it as NaN)
_DEFAULT_GAIN = 200.0          # WFDB: an ADC gain of 0 means "uncalibrated", taken as 200
_GAIN_FIELD = re.compile(r"^(?P<gain>[-+0-9.eE]+)(?:\((?P<baseline>[-+0-9]+)\))?(?:/(?P<units>.+))?$")


@dataclass
class ChallengeRecord:
    name: str
    fs: float
    signal: np.ndarray                                   # (12, T) float32 mV, canonical order LEADS
    age: float | None
    sex: str                                             # 'M', 'F' or ''
    dx: list[str]                                        # SNOMED-CT codes as strings, header order
    comments: dict[str, str] = field(default_factory=dict)   # every '#Key: value' comment line


# --------------------------------------------------------------------------------------------- public
def read_challenge_record(hea_path: Path) -> ChallengeRecord:
    """Read one record; raise ValueError (naming the file and the problem) for any defect."""
    hea_path = Path(hea_path)
    if hea_path.suffix != ".hea":
        hea_path = hea_path.with_name(hea_path.name + ".hea")
    if not hea_path.is_file():
        raise ValueError(f"{hea_path}: header file not found")
    stem = hea_path.with_suffix("")
    mat_path = stem.with_suffix(".mat")
    if not mat_path.is_file():
        raise ValueError(f"{hea_path}: missing .mat file {mat_path.name}")
    try:
        record = wfdb.rdrecord(str(stem), physical=False)
        problem = _v4_mismatch(mat_path, record)
    except Exception as exc:  # wfdb raises many types for headers it rejects and for bad data files
        problem = f"wfdb: {type(exc).__name__}: {exc}"
    if problem is None:
        return _from_wfdb(record, hea_path)
    try:
        result = _read_fallback(hea_path)
    except ValueError as fallback_exc:
        kind = getattr(fallback_exc, "kind", None)
        message = f"{fallback_exc} ({problem})"
        if kind:   # keep the defect class (and its exception type) of the fallback's finding
            exc = type(fallback_exc)(message)
            exc.kind = kind  # type: ignore[attr-defined]
            raise exc from fallback_exc
        raise ValueError(message) from fallback_exc
    log.debug("%s: read by the fallback parser (%s)", hea_path, problem)
    return result


def parse_comments(lines: list[str]) -> dict[str, str]:
    """``['Age: 56', 'Sex: Male', ...]`` (without '#') → {'Age': '56', 'Sex': 'Male', ...}."""
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip().lstrip("#").strip()
        if ":" in line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def parse_age(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        age = float(text)
    except ValueError:
        return None
    return age if math.isfinite(age) and age >= 0 else None


def parse_sex(text: str | None) -> str:
    value = (text or "").strip().lower()
    return {"male": "M", "m": "M", "female": "F", "f": "F"}.get(value, "")


def parse_dx(text: str | None) -> list[str]:
    return [code.strip() for code in (text or "").split(",") if code.strip()]


def unit_scale(unit: str, where: str = "") -> float:
    """Factor from ``unit`` to mV; ValueError for anything but mV/uV/V (case-insensitive)."""
    key = (unit or "mV").strip().lower()
    if key not in _UNIT_SCALE:
        raise ValueError(f"{where}unknown amplitude unit {unit!r} (expected mV or uV)")
    return _UNIT_SCALE[key]


# --------------------------------------------------------------------------------------------- wfdb path
def _v4_mismatch(mat_path: Path, record: wfdb.Record) -> str | None:
    """Why wfdb's raw read of ``mat_path`` cannot be trusted, or None.

    wfdb reads format ``16+24`` as raw int16 samples after 24 bytes and never looks at the MATLAB header,
    so a .mat holding another type (double), a v5 file or extra data would be read as garbage. The file
    must be exactly a little-endian MATLAB v4 int16 matrix ``val`` of shape (n_sig, sig_len).
    """
    n_sig, sig_len = int(record.n_sig), int(record.sig_len)
    if list(record.fmt or []) != ["16"] * n_sig or list(record.byte_offset or []) != [24] * n_sig:
        return f"wfdb: signal format {record.fmt} with byte offsets {record.byte_offset}, not 16+24"
    with open(mat_path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24:
        return "the .mat file is shorter than a MATLAB v4 header"
    mopt, rows, cols, imagf, namlen = np.frombuffer(head[:20], "<i4").tolist()
    if (mopt, imagf, namlen, head[20:24]) != (30, 0, 4, b"val\0"):
        return "the .mat file is not a MATLAB v4 int16 matrix 'val'"
    if (rows, cols) != (n_sig, sig_len):
        return f"the .mat matrix is ({rows}, {cols}), the header says ({n_sig}, {sig_len})"
    if mat_path.stat().st_size != 24 + 2 * rows * cols:
        return f"the .mat file has {mat_path.stat().st_size} bytes, expected {24 + 2 * rows * cols}"
    return None


def _from_wfdb(record: wfdb.Record, hea_path: Path) -> ChallengeRecord:
    where = f"{hea_path}: "
    names = _canonical_order(list(record.sig_name or []), record.n_sig, where)
    digital = record.d_signal
    if digital is None or digital.ndim != 2 or digital.shape[1] != record.n_sig:
        raise ValueError(f"{where}wrong shape: signal {None if digital is None else digital.shape}, "
                         f"expected ({record.sig_len}, {record.n_sig})")
    checks.check_sample_count(record.sig_len, digital.shape[0], f"{hea_path.name} and {record.file_name[0]}")
    checks.check_checksums(digital, record.checksum, record.sig_name, str(hea_path))
    signal = record.dac(return_res=64)        # what wfdb.rdrecord(physical=True) returns, from the same samples
    scale = np.array([unit_scale(u, where) for u in record.units])
    if np.any(scale != 1.0):
        signal = signal * scale[None, :]
    return _finish(hea_path, record.record_name, float(record.fs), signal.T, names, record.comments or [])


# --------------------------------------------------------------------------------------------- fallback
def _read_fallback(hea_path: Path) -> ChallengeRecord:
    where = f"{hea_path}: "
    try:
        text = hea_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"{where}unreadable header ({exc})") from exc
    lines = [line.strip() for line in text.splitlines()]
    comments = [line[1:] for line in lines if line.startswith("#")]
    body = [line for line in lines if line and not line.startswith("#")]
    if not body:
        raise ValueError(f"{where}header has no record line")
    rec = body[0].split()
    if len(rec) < 4:
        raise ValueError(f"{where}header record line {body[0]!r} lacks name, n_sig, fs, n_samples")
    try:
        name, n_sig = _record_name(rec[0]), int(rec[1])
        fs = float(rec[2].split("/")[0].split("(")[0])
        n_samples = int(rec[3])
    except ValueError as exc:
        raise ValueError(f"{where}header syntax error in record line {body[0]!r}") from exc
    if not (fs > 0 and math.isfinite(fs)):
        raise ValueError(f"{where}sampling rate {fs} in record line {body[0]!r}")
    signal_lines = body[1:]
    if len(signal_lines) != n_sig:
        raise ValueError(f"{where}record line declares {n_sig} signals, header has {len(signal_lines)} signal lines")
    files, gains, baselines, units, sig_names, checksums = [], [], [], [], [], []
    for line in signal_lines:
        parts = line.split()
        if len(parts) < 9:
            raise ValueError(f"{where}header syntax error in signal line {line!r}")
        file_name, fmt, gain_field = parts[0], parts[1], parts[2]
        if not fmt.startswith("16"):
            raise ValueError(f"{where}unsupported signal format {fmt!r} (the challenge .mat files are 16+24)")
        match = _GAIN_FIELD.match(gain_field)
        try:
            gain = float(match.group("gain")) if match else float("nan")
        except ValueError:
            gain = float("nan")
        if not match or not math.isfinite(gain):
            raise ValueError(f"{where}header syntax error in gain field {gain_field!r}")
        try:
            adc_zero = int(parts[4])
        except ValueError as exc:
            raise ValueError(f"{where}header syntax error in ADC zero {parts[4]!r} of signal line {line!r}") from exc
        files.append(file_name)
        gains.append(gain if gain != 0 else _DEFAULT_GAIN)
        baselines.append(int(match.group("baseline")) if match.group("baseline") else adc_zero)
        units.append(match.group("units") or "mV")
        sig_names.append(" ".join(parts[8:]))
        checksums.append(int(parts[6]) if re.fullmatch(r"[-+]?\d+", parts[6]) else None)
    if len(set(files)) != 1:
        raise ValueError(f"{where}signals are spread over several files {sorted(set(files))}")
    names = _canonical_order(sig_names, n_sig, where)
    scale = np.array([unit_scale(u, where) for u in units])
    mat_path = hea_path.parent / files[0]
    if not mat_path.is_file():
        raise ValueError(f"{where}missing .mat file {files[0]}")
    try:
        content = scipy.io.loadmat(str(mat_path), variable_names=["val"])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... for corrupt files
        raise ValueError(f"{mat_path}: unreadable .mat file ({type(exc).__name__}: {exc})") from exc
    if "val" not in content:
        raise ValueError(f"{mat_path}: no variable 'val' in the .mat file")
    val = np.asarray(content["val"])
    if val.ndim != 2 or val.shape[0] != n_sig:
        raise ValueError(f"{mat_path}: wrong shape: val {val.shape}, expected ({n_sig}, {n_samples})")
    checks.check_sample_count(n_samples, val.shape[1], f"{hea_path.name} and {mat_path.name}")
    if not (np.issubdtype(val.dtype, np.integer) or np.issubdtype(val.dtype, np.floating)):
        raise ValueError(f"{mat_path}: val has dtype {val.dtype}, expected int16")
    if np.issubdtype(val.dtype, np.integer) or np.isfinite(val).all():
        checks.check_checksums(np.round(val).astype(np.int64), checksums, sig_names, str(hea_path), time_axis=1)
    digital = val.astype(np.float64)
    if np.issubdtype(val.dtype, np.integer):
        digital[val == _WFDB_INVALID_16] = np.nan
    physical = (digital - np.asarray(baselines, np.float64)[:, None]) / np.asarray(gains, np.float64)[:, None]
    if np.any(scale != 1.0):
        physical = physical * scale[:, None]
    return _finish(hea_path, name, fs, physical, names, comments)


# --------------------------------------------------------------------------------------------- shared
def _record_name(token: str) -> str:
    """The record name of a header's record line. Georgia headers of the challenge releases write the name with
    its data file's suffix (``E00001.mat 12 500 5000 ...``), which wfdb rejects; the record is ``E00001``."""
    return token[:-4] if token.lower().endswith(".mat") else token


def _canonical_order(sig_names: list[str], n_sig: int, where: str) -> list[str]:
    names = [_LEAD_ALIASES.get(str(n).strip().upper()) for n in sig_names]
    if n_sig != len(LEADS) or len(sig_names) != len(LEADS) or sorted(n for n in names if n) != sorted(LEADS):
        raise ValueError(f"{where}expected the 12 standard leads, found {n_sig}: {list(sig_names)}")
    return names  # type: ignore[return-value]


def _finish(hea_path: Path, name: str, fs: float, signal: np.ndarray, names: list[str],
            comment_lines: list[str]) -> ChallengeRecord:
    """``signal`` (n_sig, T) in mV in header order → canonical float32; shared checks; header comments."""
    where = f"{hea_path}: "
    if signal.shape[1] == 0:
        raise ValueError(f"{where}record has no samples")
    bad = ~np.isfinite(signal)
    if bad.any():
        raise ValueError(f"{where}{int(bad.sum())} non-finite samples (NaN or WFDB's invalid value -32768)")
    order = [names.index(lead) for lead in LEADS]
    checks.check_flat(signal, names, str(hea_path))
    comments = parse_comments(comment_lines)
    return ChallengeRecord(
        name=str(name), fs=float(fs),
        signal=np.ascontiguousarray(signal[order], dtype=np.float32),
        age=parse_age(comments.get("Age")), sex=parse_sex(comments.get("Sex")),
        dx=parse_dx(comments.get("Dx")), comments=comments,
    )
