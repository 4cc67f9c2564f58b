"""Input checks shared by every dataset source, and the policy that decides what each defect leads to.

Every source runs the same checks on what it reads, so the same defect ends the same way whatever the dataset
(docs/data-quality.md has the matrix). Two outcomes exist, never a silent store:

- **quarantine**: the record (night) is left out and listed in ``<store>.quarantine.csv`` with a reason that
  names the defect class (``"flat lead: ..."``); the quarantine counts against ``max_quarantine_fraction``
  (:class:`physiossl.data.convert.Conversion`), so a tree with many defective records is refused as a whole;
- **refuse**: :class:`~physiossl.data.sources.ConversionError` naming the file, the problem and what to do; no
  store is written.

Defects of one record's own files follow :data:`POLICY` (quarantine by default; set a class to ``"refuse"`` to
stop at the first such record instead). Defects of a file every record depends on (the tree against its
``SHA256SUMS.txt``, a metadata table that is not UTF-8) always refuse. The checks are vectorised numpy on arrays
the sources hold anyway, or header arithmetic; only the tree verification reads extra bytes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .convert import ConversionError

log = logging.getLogger(__name__)

QUARANTINE, REFUSE = "quarantine", "refuse"
SUMS_FILE = "SHA256SUMS.txt"

#: defect class → the words every reason of that class starts with
LABELS = {
    "sample_count": "sample count mismatch",
    "unknown_code": "unknown label code",
    "checksum": "checksum mismatch",
    "flat_lead": "flat lead",
    "flat_record": "flat record",
    "encoding": "not UTF-8",
}

#: what a defect of one record's own files leads to, per class: ``"quarantine"`` or ``"refuse"``
POLICY: dict[str, str] = {
    "sample_count": QUARANTINE,   # a header's sample count differs from what its data file holds (either way)
    "unknown_code": QUARANTINE,   # a label code absent from the source's code table (any of the record's codes)
    "checksum": QUARANTINE,       # WFDB header checksums that the digital samples no longer match
    "flat_lead": QUARANTINE,      # one lead (channel) constant over the record's whole valid length
    "flat_record": QUARANTINE,    # every lead constant (an all-zero record; a silent night)
    "encoding": QUARANTINE,       # a record's own text file that is not UTF-8
}


class RecordDefect(ValueError):
    """A defect of one record that :data:`POLICY` quarantines; ``str()`` is the quarantine reason and ``kind`` the
    defect class. A ValueError, so every source's quarantine path takes it."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(message)
        self.kind = kind


def reason(kind: str, detail: str) -> str:
    """The quarantine reason of a defect: its class label, then the detail (which names the file)."""
    return f"{LABELS[kind]}: {detail}"


def defect(kind: str, detail: str, cls: type[ValueError] = RecordDefect) -> Exception:
    """The exception to raise for a defect of one record under :data:`POLICY`: a ``cls`` (quarantined by the
    source) or, where the class is set to refuse, a ConversionError that stops the conversion."""
    message = reason(kind, detail)
    if POLICY.get(kind, QUARANTINE) == REFUSE:
        return ConversionError(f"{message}. Conversion refused: the input policy refuses every {LABELS[kind]} "
                               f"(physiossl.data.checks.POLICY[{kind!r}]); repair or remove the record")
    exc = cls(message)
    exc.kind = kind  # type: ignore[attr-defined]
    return exc


def reason_or_refuse(kind: str, detail: str) -> str:
    """For sources that collect reasons as strings: the quarantine reason of a defect, or the refusal raised where
    :data:`POLICY` refuses its class."""
    exc = defect(kind, detail)
    if isinstance(exc, ConversionError):
        raise exc
    return str(exc)


# --------------------------------------------------------------------------------------------- sample counts
def check_sample_count(declared: int, actual: int, what: str, unit: str = "samples") -> None:
    """The header of ``what`` (the files, e.g. ``"x.hea and x.dat"``) declares ``declared`` units, its data hold
    ``actual``: a ``sample count mismatch`` either way."""
    if int(declared) != int(actual):
        direction = "truncated" if actual < declared else "more data than declared"
        raise defect("sample_count", f"{what}: header declares {int(declared)} {unit}, the data hold "
                                     f"{_count(actual)} ({direction})")


def _count(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.2f}"


#: bits per sample of the WFDB storage formats whose size follows from the sample count
WFDB_FORMAT_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12}


def check_wfdb_data_size(directory: Path, header_name: str, sig_len: int, file_names: Sequence[str],
                         fmts: Sequence[str], samps_per_frame: Sequence[int] | None,
                         byte_offsets: Sequence[int | None] | None) -> None:
    """The size of each WFDB data file against the sample count its header declares (both directions).
    Formats whose size does not follow from the count (compressed, 310/311) are not checked."""
    files: dict[str, list[int]] = {}
    for k, name in enumerate(file_names):
        files.setdefault(str(name), []).append(k)
    for name, signals in files.items():
        bits = 0
        for k in signals:
            fmt = str(fmts[k]).split("+")[0]
            if fmt not in WFDB_FORMAT_BITS:
                return
            bits += WFDB_FORMAT_BITS[fmt] * int((samps_per_frame or [1] * len(fmts))[k] or 1)
        offset = int((byte_offsets or [0] * len(fmts))[signals[0]] or 0)
        path = Path(directory) / name
        if not path.is_file():
            return   # the reader names a missing file
        size = path.stat().st_size
        expected = offset + math.ceil(int(sig_len) * bits / 8)
        if size != expected:
            held = max(size - offset, 0) * 8 / bits
            check_sample_count(sig_len, held, f"{header_name} and {name} ({size} bytes, {expected} expected)")


# --------------------------------------------------------------------------------------------- checksums
def check_checksums(digital: np.ndarray, declared: Sequence[int | None] | None, names: Sequence[str],
                    where: str, time_axis: int = 0) -> None:
    """The WFDB header checksums (16-bit sums of each signal's digital samples) against ``digital`` (integers,
    signals along the other axis). Signals whose header gives no checksum are skipped."""
    if declared is None:
        return
    declared = list(declared)
    given = np.array([c is not None for c in declared])
    if not given.any():
        return
    sums = np.asarray(digital).astype(np.int64, copy=False).sum(axis=time_axis) % 65536
    expect = np.array([int(c) % 65536 if c is not None else 0 for c in declared], dtype=np.int64)
    bad = np.flatnonzero(given & (sums != expect))
    if bad.size:
        shown = ", ".join(f"{names[k]} (header {int(expect[k])}, samples {int(sums[k])})" for k in bad[:4])
        more = f" and {bad.size - 4} more" if bad.size > 4 else ""
        raise defect("checksum", f"{where}: the digital samples of {bad.size} signal(s) do not match the header "
                                 f"checksums: {shown}{more}; the data file changed after its header was written")


# --------------------------------------------------------------------------------------------- flat signals
def check_flat(signal: np.ndarray, names: Sequence[str], where: str, *, unit: str = "record",
               time_axis: int = 1) -> None:
    """Quarantine a record whose leads (channels) are constant over its whole length: every one (``flat
    record``) or some (``flat lead``). ``signal`` holds only the valid samples (no padding) and is finite."""
    x = np.asarray(signal)
    n = x.shape[time_axis]
    prefix = f"{where}: " if where else ""
    if n == 0:
        raise defect("flat_record", f"{prefix}no samples")
    constant = x.max(axis=time_axis) == x.min(axis=time_axis)
    if constant.all():
        values = np.unique(np.take(x, 0, axis=time_axis))
        value = "zero" if values.size == 1 and values[0] == 0 else "constant"
        raise defect("flat_record", f"{prefix}every lead {value} over the whole {unit} ({n} samples)")
    if constant.any():
        flat = [str(names[k]) for k in np.flatnonzero(constant)]
        raise defect("flat_lead", f"{prefix}lead(s) {', '.join(flat)} constant over the whole {unit} ({n} samples)")


class ConstantTracker:
    """Running minimum and maximum of named channels that arrive block by block (a night of audio): tells at the
    end whether a channel was constant over everything it delivered, without holding it."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.lo = {n: math.inf for n in self.names}
        self.hi = {n: -math.inf for n in self.names}
        self.count = {n: 0 for n in self.names}

    def update(self, name: str, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.size:
            self.lo[name] = min(self.lo[name], float(block.min()))
            self.hi[name] = max(self.hi[name], float(block.max()))
            self.count[name] += int(block.size)

    def check(self, where: str, unit: str = "night") -> None:
        """``flat record`` when every channel was constant, ``flat lead`` when some were (see :func:`check_flat`)."""
        seen = [n for n in self.names if self.count[n]]
        flat = [n for n in seen if self.lo[n] == self.hi[n]]
        if seen and len(flat) == len(seen):
            values = ", ".join(f"{n} = {self.lo[n]:g}" for n in flat)
            raise defect("flat_record", f"{where}: the sound is constant over the whole {unit} ({values}): a silent "
                                        f"or disconnected microphone")
        if flat:
            raise defect("flat_lead", f"{where}: channel(s) {', '.join(map(str, flat))} constant over the whole "
                                      f"{unit} (value {', '.join(f'{self.lo[n]:g}' for n in flat)}) while "
                                      f"{', '.join(n for n in seen if n not in flat)} carry sound; choose the "
                                      f"channels that carry sound")


# --------------------------------------------------------------------------------------------- label codes
def check_codes(codes: Sequence[str], known, table: str, what: str = "code", of: int | None = None) -> None:
    """Quarantine a record with a label code absent from its source's code table (``known``), naming the codes and
    whether they were all the record had (``of``: how many codes the record has, when ``codes`` is a part of them).
    A record is never stored with codes silently dropped."""
    unknown = [c for c in codes if c not in known]
    if unknown:
        total = len(codes) if of is None else int(of)
        whole = " (all of the record's codes)" if len(unknown) == total else \
            f" (besides {total - len(unknown)} known)"
        raise defect("unknown_code", f"{what}{'s' if len(unknown) > 1 else ''} "
                                     f"{', '.join(repr(c) for c in unknown)} not in {table}{whole}")


# --------------------------------------------------------------------------------------------- text files
def utf8_problem(path: Path) -> str | None:
    """Where ``path`` is not valid UTF-8: byte, offset, line and column of the first bad byte; None if it is."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return (f"byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}, column {column}) is not "
                f"valid UTF-8 ({exc.reason})")
    return None


def encoding_error(path: Path, exc: UnicodeDecodeError | None = None) -> ConversionError:
    """The refusal for a metadata table that is not UTF-8, naming the file and the first bad byte."""
    where = utf8_problem(path) or (str(exc) if exc is not None else "undecodable")
    return ConversionError(f"{path}: {LABELS['encoding']}: {where}. The release's tables are UTF-8: restore the "
                           f"file from the release (or re-save it as UTF-8)")


def read_csv_table(path: Path, **read_csv):
    """``pandas.read_csv(path)`` with a non-UTF-8 byte reported as a ConversionError naming the file and position."""
    import pandas as pd

    try:
        return pd.read_csv(path, **read_csv)
    except UnicodeDecodeError as exc:
        raise encoding_error(Path(path), exc) from exc


# --------------------------------------------------------------------------------------------- the tree
def verify_tree(raw_dir: Path, dataset: str, *, absent_level: int = logging.WARNING, skip: Sequence[str] = ()) -> str:
    """Verify a raw tree against its ``SHA256SUMS.txt`` before it is converted
    (:func:`physiossl.data.fetch.verify_sha256sums`): ConversionError naming every file that differs; files it lists
    that are absent (a trimmed tree) are logged and counted, and the records that need them are quarantined by the
    source; without the file a log line says the tree is not verified. Folders in ``skip`` (``"records500/"``) hold
    files the conversion does not read: they are not verified, and the line says so. Returns the line for the
    store's provenance."""
    from .fetch import DownloadError, verify_sha256sums

    raw_dir = Path(raw_dir)
    if not (raw_dir / SUMS_FILE).is_file():
        log.log(absent_level, "%s: no %s in %s: its files are not verified against published checksums",
                dataset, SUMS_FILE, raw_dir)
        return f"not verified: no {SUMS_FILE}"
    absent: list[str] = []
    try:
        n = verify_sha256sums(raw_dir, SUMS_FILE, absent=absent, skip=skip)
    except DownloadError as exc:
        raise sums_refusal(raw_dir, dataset, str(exc)) from exc
    line = f"{n} files verified against {SUMS_FILE}"
    if skip:
        line += f" ({', '.join(skip)} not read, not verified)"
    if absent:   # a trimmed tree: a record that needs an absent file is quarantined as unreadable
        log.warning("%s: %d files that %s lists are absent from %s (e.g. %s): not verified; a record that needs one "
                    "is quarantined", dataset, len(absent), SUMS_FILE, raw_dir, ", ".join(absent[:3]))
        return f"{line}, {len(absent)} listed files absent"
    return line


def sums_refusal(raw_dir: Path, dataset: str, problems: str) -> ConversionError:
    """The refusal for a tree whose files differ from its ``SHA256SUMS.txt``."""
    return ConversionError(
        f"{Path(raw_dir) / SUMS_FILE}: the tree does not match its checksums, conversion refused: {problems}\n"
        f"Download the release again (`physiossl download {dataset}`) or restore the files named; a file removed or "
        f"changed on purpose needs its line removed from {SUMS_FILE}")


def provenance(tree: str) -> dict:
    """What the store's provenance records about the checks: the tree verification and the policy in force."""
    return {"sha256sums": tree, "policy": dict(POLICY)}
