"""PhysioNet/CinC Challenge 2020 (PhysioNet ``challenge-2020`` 1.0.2): download, demo tree, conversion.

Tree layout (the PhysioNet archive, extracted)::

    training/<source>/g<k>/<record>.hea + <record>.mat     up to 1000 records per g<k> folder
    training/<source>/RECORDS
    dx_mapping_scored.csv, dx_mapping_unscored.csv          the SNOMED-CT tables (see download())
    SHA256SUMS.txt

with the six sources ``cpsc_2018`` (A*, 500 Hz), ``cpsc_2018_extra`` (Q*, 500 Hz), ``st_petersburg_incart``
(I*, 257 Hz, 30 min), ``ptb`` (S*, 1000 Hz), ``ptb-xl`` (HR*, 500 Hz, 10 s) and ``georgia`` (E*, 500 Hz).
Records are read by :func:`._challenge.read_challenge_record` (wfdb, with a fallback parser for headers wfdb
rejects). The mapping tables have the challenge's columns ``Dx, SNOMED CT Code, Abbreviation, CPSC, ...``
(the 2021 tables spell the code column ``SNOMEDCTCode``; both are accepted).

Conversion decisions (all recorded in the store attrs):

- **Rate**: every record is resampled from its own rate (header) to ``fs`` with the anti-aliasing
  polyphase filter ``scipy.signal.resample_poly``.
- **Length**: the store holds ``T = max_seconds * fs`` samples per record (default 10 s, the length of most
  records and of every other ECG store, so pools share one dense cache layout); shorter records are
  zero-padded (``lengths`` gives the valid samples), longer ones (INCART 30 min, long PTB/CPSC records) keep
  their first ``max_seconds`` (resampled whole, then cut, so the cut has no filter edge). Truncated records
  are listed in attrs ``truncated`` ({record: original duration in s}), never silently. Cost: the full
  release at 100 Hz is 43,101 × 12 × 1000 float32 ≈ 2 GB uncompressed (≈ 12 GB with ``max_seconds=60``).
- **Folds**: there are no patient ids in the challenge data, so ``patient_id`` = record name and
  ``fold = 1 + sha256(record name) mod 10``: deterministic, independent of which other records are present,
  uniform within every source, and the same for a record in the 2020 and 2021 releases. Records of one
  patient (PTB, INCART) may fall in different folds.
- **Labels**: ``all`` = every code of both mapping tables, ``scored`` = the scored table's codes (the raw codes;
  the challenge's equivalent pairs, e.g. 713427006/59118001, are not merged: attrs ``scored_equivalents``
  lists them from the table's Notes). Classes are the SNOMED codes as strings, sorted numerically; attrs
  ``snomed`` maps each to its abbreviation. A Dx code found in neither table quarantines the record
  (``unknown SNOMED code X``) unless ``allow_unknown_codes=True``, which keeps it and appends the code to
  the ``all`` classes (attrs ``unknown_codes``).
- **PTB-XL overlap**: the ``ptb-xl`` records ``HRxxxxx`` are PTB-XL ecg_id ``xxxxx``. Each gets
  ``xref/ptbxl`` = ``str(ecg_id)`` (PTB-XL's own ``meta/record_id``; '' for the other records), which the
  pretraining pool's leakage guard uses to drop PTB-XL's validation/test records; attrs ``ptbxl_ids`` holds
  the same mapping as {record name: ecg_id (int)} for users.
- **Quarantine** (``<store>.quarantine.csv``, record = path of the record below ``raw_dir`` without suffix):
  unreadable/corrupt/missing files, wrong lead set, non-finite samples, unknown codes, a record name seen
  before (duplicate across sources; the first in path order is kept), a ``.mat`` without header, and the
  checks every source shares (:mod:`._checks`, docs/data-quality.md): a sample count that differs between header
  and ``.mat``, header checksums the samples do not match, flat leads. A record whose ``#Dx`` is empty is kept
  with no labels (counted in provenance ``records_without_codes``). A tree that differs from its
  ``SHA256SUMS.txt`` is refused before anything is read. More than ``max_quarantine_fraction`` quarantined →
  :class:`ConversionError` and no store.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.io
from tqdm import tqdm

from ... import checks
from ...convert import Conversion, ConversionError
from ...fetch import download_file, fetch_archive_tree
from ...files import atomic_dir, sha256_file
from ...resample import rate_ratio, resample
from ...sources import register
from .. import LEADS, synth
from ..store import EcgStoreWriter
from ._challenge import read_challenge_record

NAME = "cinc2020"
SOURCE_VERSION = "1.0.2"
URL = ("https://physionet.org/static/published-projects/challenge-2020/"
       "classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2.zip")
#: the SNOMED mapping tables of the 2020 evaluation code (fetched when the archive lacks them)
MAPPING_URL = "https://raw.githubusercontent.com/physionetchallenges/evaluation-2020/master"
SCORED_TABLE, UNSCORED_TABLE = "dx_mapping_scored.csv", "dx_mapping_unscored.csv"
MAPPING_TABLES = (SCORED_TABLE, UNSCORED_TABLE)
LABEL_SETS = ("all", "scored")
DEFAULT_NORM_FOLDS = tuple(range(1, 9))
DEFAULT_MAX_SECONDS = 10.0
_CODE_COLUMNS = ("SNOMED CT Code", "SNOMEDCTCode")
_PTBXL_NAME = re.compile(r"^HR(\d+)$")
_EQUIVALENT = re.compile(r"(\d+)\s+and\s+(\d+)\s+as the same diagnosis")


# --------------------------------------------------------------------------------------------- download
def download(out_dir: Path, url: str = URL, progress: bool = True, *, mapping_url: str = MAPPING_URL,
             verify: bool = True) -> Path:
    """Fetch the PhysioNet archive (resumable), extract it safely, verify every file against the archive's
    ``SHA256SUMS.txt`` (``verify=False`` skips that); then fetch the two SNOMED mapping tables from the
    challenge's evaluation repository if the archive lacks them (not part of the release: checked by their
    columns when read, and their SHA-256 is recorded in the store's provenance)."""
    tree = fetch_archive_tree(url, Path(out_dir), sums_file="SHA256SUMS.txt" if verify else None, progress=progress)
    for name in MAPPING_TABLES:
        if not any(tree.rglob(name)):
            download_file(f"{mapping_url.rstrip('/')}/{name}", tree / name, progress=progress)
    return tree


# --------------------------------------------------------------------------------------------- demo
#: source directory → (record prefix, digits, rate Hz, column in the mapping tables, real record count)
SOURCES = {
    "cpsc_2018": ("A", 4, 500, "CPSC", 6877),
    "cpsc_2018_extra": ("Q", 4, 500, "CPSC-Extra", 3453),
    "st_petersburg_incart": ("I", 4, 257, "StPetersburg", 74),
    "ptb": ("S", 4, 1000, "PTB", 516),
    "ptb-xl": ("HR", 5, 500, "PTB-XL", 21837),
    "georgia": ("E", 5, 500, "Georgia", 10344),
}
#: demo durations in seconds (real: CPSC 6-144 s, INCART 1800 s, PTB ~32-120 s; shortened for speed,
#: INCART still longer than the default 60 s cap)
_DEMO_SECONDS = {
    "cpsc_2018": (8, 10, 12, 15, 20), "cpsc_2018_extra": (10, 10, 12, 20), "st_petersburg_incart": (75,),
    "ptb": (12, 20, 32), "ptb-xl": (10,), "georgia": (10,),
}
#: synth.py statements → SNOMED-CT codes; per-source spellings as in the real data (CPSC labels RBBB,
#: Georgia VPB)
_SNOMED = {"SR": "426783006", "SBRAD": "426177001", "STACH": "427084000", "AFIB": "164889003",
           "SARRH": "427393009", "IMI": "164865005", "LVH": "164873001", "CLBBB": "164909002",
           "CRBBB": "713427006", "1AVB": "270492004", "LVOLT": "251146004", "NDT": "164934002",
           "PVC": "427172004"}
_SOURCE_SNOMED = {"cpsc_2018": {"CRBBB": "59118001"}, "georgia": {"PVC": "17338001"}}
_RBBB_NOTE = "We score 713427006 and 59118001 as the same diagnosis."
_PVC_NOTE = "We score 427172004 and 17338001 as the same diagnosis."
#: rows of the official 2020 tables (Dx, code, abbreviation, notes) for the codes the demo uses
_SCORED_ROWS = [
    ("1st degree av block", "270492004", "IAVB", ""),
    ("atrial fibrillation", "164889003", "AF", ""),
    ("complete right bundle branch block", "713427006", "CRBBB", _RBBB_NOTE),
    ("left bundle branch block", "164909002", "LBBB", ""),
    ("low qrs voltages", "251146004", "LQRSV", ""),
    ("premature ventricular contractions", "427172004", "PVC", _PVC_NOTE),
    ("right bundle branch block", "59118001", "RBBB", _RBBB_NOTE),
    ("sinus arrhythmia", "427393009", "SA", ""),
    ("sinus bradycardia", "426177001", "SB", ""),
    ("sinus rhythm", "426783006", "NSR", ""),
    ("sinus tachycardia", "427084000", "STach", ""),
    ("t wave abnormal", "164934002", "TAb", ""),
    ("ventricular premature beats", "17338001", "VPB", _PVC_NOTE),
]
_UNSCORED_ROWS = [
    ("left ventricular hypertrophy", "164873001", "LVH"),
    ("myocardial infarction", "164865005", "MI"),
]
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _allocate(n_records: int) -> dict[str, int]:
    """Records per source: one each (when n >= 6), the rest in proportion to the real counts."""
    names = list(SOURCES)
    if n_records < len(names):
        return {name: int(i < n_records) for i, name in enumerate(names)}
    weights = np.array([SOURCES[s][4] for s in names], float)
    extra = n_records - len(names)
    share = extra * weights / weights.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: extra - counts.sum()]:
        counts[i] += 1
    return {name: 1 + int(c) for name, c in zip(names, counts)}


def _demo_signal(spec: synth.EcgSpec, rng: np.random.Generator, seconds: float, fs: int) -> np.ndarray:
    """(12, seconds * fs) mV: 10 s synth.py segments of one spec at 500 Hz, joined, resampled to ``fs``."""
    segments = [synth.synthesize(spec, rng, fs=synth.FS) for _ in range(int(math.ceil(seconds / synth.DURATION_S)))]
    x = np.concatenate(segments, axis=1)[:, : int(round(seconds * synth.FS))].astype(np.float64)
    x = resample(x, synth.FS, fs, axis=1, dtype=None)
    return x[:, : int(round(seconds * fs))]


def write_challenge_record(directory: Path, name: str, fs: float, signal: np.ndarray, comments: dict[str, str],
                           gain: float = 1000.0, timestamp: str = "01-Jan-2020 00:00:00") -> None:
    """Write (12, T) mV in canonical lead order as ``<name>.hea`` + ``<name>.mat`` (MATLAB v4 ``val`` int16,
    format ``16+24``), in the style of the challenge files (``HR06000.hea``)."""
    directory.mkdir(parents=True, exist_ok=True)
    digital = np.clip(np.round(np.asarray(signal, np.float64) * gain), -32767, 32767).astype(np.int16)
    scipy.io.savemat(str(directory / f"{name}.mat"), {"val": digital}, format="4")
    sums = digital.astype(np.int64).sum(axis=1)
    checksums = (sums + 32768) % 65536 - 32768
    fs_text = f"{fs:g}"
    lines = [f"{name} {len(LEADS)} {fs_text} {digital.shape[1]} {timestamp}"]
    for k, lead in enumerate(LEADS):
        lines.append(f"{name}.mat 16+24 {gain:g}/mV 16 0 {int(digital[k, 0])} {int(checksums[k])} 0 {lead}")
    lines += [f"#{key}: {value}" for key, value in comments.items()]
    (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")


def demo(out_dir: Path, n_records: int = 600, seed: int = 0) -> Path:
    """Write a challenge-2020-format tree of ``n_records`` synthetic records (seeded) over the six sources,
    with the two mapping tables (the rows of the codes the demo uses) and ``SHA256SUMS.txt``."""
    rng = np.random.default_rng(seed)
    counts = _allocate(n_records)
    tally: dict[str, dict[str, int]] = {}
    with atomic_dir(Path(out_dir)) as tmp:
        bar = tqdm(total=n_records, desc="cinc2020 demo", unit="rec")
        for source, n in counts.items():
            prefix, digits, fs, column, _ = SOURCES[source]
            listing = []
            for i in range(n):
                name = f"{prefix}{i + 1:0{digits}d}"
                group = f"g{i // 1000 + 1}"
                spec = synth.sample_spec(rng)
                seconds = float(rng.choice(_DEMO_SECONDS[source]))
                signal = _demo_signal(spec, rng, seconds, fs)
                mapping = {**_SNOMED, **_SOURCE_SNOMED.get(source, {})}
                codes = [mapping[spec.rhythm]] + [mapping[m] for m in spec.morphologies]
                for code in codes:
                    tally.setdefault(code, {}).setdefault(column, 0)
                    tally[code][column] += 1
                age = "NaN" if rng.random() < 0.05 else str(int(rng.integers(18, 90)))
                comments = {"Age": age, "Sex": str(rng.choice(["Male", "Female"])), "Dx": ",".join(codes),
                            "Rx": "Unknown", "Hx": "Unknown", "Sx": "Unknown"}
                stamp = (f"{int(rng.integers(1, 29)):02d}-{_MONTHS[int(rng.integers(0, 12))]}-2020 "
                         f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}:"
                         f"{int(rng.integers(0, 60)):02d}")
                write_challenge_record(tmp / "training" / source / group, name, fs, signal, comments, timestamp=stamp)
                listing.append(f"{group}/{name}")
                bar.update(1)
            if n:
                (tmp / "training" / source / "RECORDS").write_text("\n".join(listing) + "\n")
        bar.close()
        _write_tables(tmp, tally)
        lines = [f"{sha256_file(p)}  {p.relative_to(tmp).as_posix()}"
                 for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != "SHA256SUMS.txt"]
        (tmp / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    return Path(out_dir)


def _write_tables(root: Path, tally: dict[str, dict[str, int]]) -> None:
    columns = [SOURCES[s][3] for s in SOURCES]

    def counts(code: str) -> list[int]:
        row = [tally.get(code, {}).get(c, 0) for c in columns]
        return row + [sum(row)]

    scored = pd.DataFrame([[dx, code, abbr, *counts(code), note] for dx, code, abbr, note in _SCORED_ROWS],
                          columns=["Dx", "SNOMED CT Code", "Abbreviation", *columns, "Total", "Notes"])
    unscored = pd.DataFrame([[dx, code, abbr, *counts(code)] for dx, code, abbr in _UNSCORED_ROWS],
                            columns=["Dx", "SNOMED CT Code", "Abbreviation", *columns, "Total"])
    scored.to_csv(root / SCORED_TABLE, index=False)
    unscored.to_csv(root / UNSCORED_TABLE, index=False)


# --------------------------------------------------------------------------------------------- convert
def find_table(raw_dir: Path, name: str) -> Path:
    """The mapping table ``name`` in the tree (the shallowest one); ConversionError if there is none."""
    raw_dir = Path(raw_dir)
    for candidate in (raw_dir / name, raw_dir / "training" / name):
        if candidate.is_file():
            return candidate
    found = sorted(raw_dir.rglob(name), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise ConversionError(
            f"{raw_dir}: {name} not found (is {raw_dir} a challenge-2020 tree? The table is in "
            f"{MAPPING_URL}/{name}; `physiossl download cinc2020` fetches it)")
    return found[0]


def read_tables(raw_dir: Path) -> tuple[dict[str, Path], dict[str, str], list[str], list[list[str]]]:
    """(table paths, {code: abbreviation} of both tables, scored codes, equivalent scored code pairs)."""
    paths = {name: find_table(raw_dir, name) for name in MAPPING_TABLES}
    names: dict[str, str] = {}
    scored: list[str] = []
    equivalents: list[list[str]] = []
    for table, path in paths.items():
        try:
            df = checks.read_csv_table(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, OSError) as exc:
            raise ConversionError(f"{path}: unreadable mapping table ({exc})") from exc
        df.columns = [str(c).strip() for c in df.columns]
        code_col = next((c for c in _CODE_COLUMNS if c in df.columns), None)
        if code_col is None or "Abbreviation" not in df.columns:
            raise ConversionError(f"{path}: needs columns 'SNOMED CT Code' (or 'SNOMEDCTCode') and 'Abbreviation', "
                                  f"has {list(df.columns)}")
        for code, abbr, note in zip(df[code_col], df["Abbreviation"], df.get("Notes", [""] * len(df))):
            code = str(code).strip()
            if not code:
                continue
            names.setdefault(code, str(abbr).strip())
            if table == SCORED_TABLE:
                scored.append(code)
                pair = _EQUIVALENT.search(str(note))
                if pair and sorted(pair.groups()) not in equivalents:
                    equivalents.append(sorted(pair.groups()))
    if not scored:
        raise ConversionError(f"{paths[SCORED_TABLE]}: no codes")
    return paths, names, _sorted_codes(set(scored)), equivalents


def _sorted_codes(codes) -> list[str]:
    return sorted(codes, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))


def fold_of(record_name: str) -> int:
    """``1 + sha256(record name) mod 10``."""
    return 1 + int(hashlib.sha256(record_name.encode("utf-8")).hexdigest(), 16) % 10


def _record_base(raw_dir: Path) -> Path:
    return raw_dir / "training" if (raw_dir / "training").is_dir() else raw_dir


def _source_of(path: Path, base: Path) -> str:
    rel = path.relative_to(base)
    return rel.parts[0] if len(rel.parts) > 1 else base.name


@register("cinc2020")
def convert(raw_dir: Path, out: Path, fs: int = 100, max_quarantine_fraction: float = 0.01,
            norm_folds: Sequence[int] = DEFAULT_NORM_FOLDS, progress: bool = True,
            max_seconds: float = DEFAULT_MAX_SECONDS, allow_unknown_codes: bool = False, workers: int = 1) -> dict:
    """Challenge-2020 tree → ECG store at ``fs`` Hz (see the module docstring for every decision)."""
    raw_dir, out = Path(raw_dir), Path(out)
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    tree = checks.verify_tree(raw_dir, NAME)
    table_paths, snomed, scored, equivalents = read_tables(raw_dir)
    known = set(snomed)
    base = _record_base(raw_dir)
    headers = sorted(base.rglob("*.hea"), key=lambda p: p.relative_to(base).as_posix())
    orphans = sorted(p for p in base.rglob("*.mat") if not p.with_suffix(".hea").is_file())
    n_total = len(headers) + len(orphans)
    if n_total == 0:
        raise ConversionError(f"{raw_dir}: no challenge records (*.hea + *.mat) found under {base}")
    n_samples = int(round(max_seconds * fs))
    conversion = Conversion(raw_dir, out, n_total, max_fraction=max_quarantine_fraction, desc=NAME,
                            ids="record name", progress=progress)
    for p in orphans:
        conversion.quarantine(p.relative_to(raw_dir).with_suffix("").as_posix(),
                              f"{p}: .mat file without a .hea header")
    rates: set[float] = set()
    truncated: dict[str, float] = {}
    ptbxl_ids: dict[str, int] = {}
    unknown: set[str] = set()
    without_codes = 0
    sources: dict[str, int] = {}
    norm_folds = set(int(f) for f in norm_folds)
    with EcgStoreWriter.open(out, capacity=len(headers), n_samples=n_samples, fs=fs, workers=workers) as writer:
        for hea in conversion.track(headers):
            key = hea.relative_to(raw_dir).with_suffix("").as_posix()
            with conversion.record(key):    # the reader names the file and the defect
                name = hea.stem
                conversion.claim(name, key)
                rec = read_challenge_record(hea)
                if rec.name != name:
                    raise ValueError(f"{hea}: header names the record {rec.name!r}, the file is {name!r}")
                if not allow_unknown_codes:
                    checks.check_codes(rec.dx, known, f"{SCORED_TABLE} or {UNSCORED_TABLE}", what="SNOMED code")
                signal = resample(np.asarray(rec.signal, dtype=np.float64), rec.fs, fs, axis=1)
                cut = signal.shape[1] > n_samples
                source = _source_of(hea, base)
                match = _PTBXL_NAME.match(name)
                fold = fold_of(name)
                writer.append(
                    np.ascontiguousarray(signal[:, :n_samples], dtype=np.float32),
                    meta={"record_id": name, "patient_id": name, "fold": fold, "age": rec.age, "sex": rec.sex,
                          "source": source},
                    labels={"all": list(dict.fromkeys(rec.dx)), "scored": [c for c in rec.dx if c in scored]},
                    norm=fold in norm_folds,
                    xref={"ptbxl": str(int(match.group(1)))} if match else None,
                )
                rates.add(float(rec.fs))
                without_codes += not rec.dx
                unknown.update(c for c in rec.dx if c not in known)
                if cut:
                    truncated[name] = round(rec.signal.shape[1] / rec.fs, 3)
                sources[source] = sources.get(source, 0) + 1
                if match:
                    ptbxl_ids[name] = int(match.group(1))   # = PTB-XL's meta/record_id (its ecg_id)
        extra_codes = _sorted_codes(unknown)
        label_sets = {"all": _sorted_codes(known) + extra_codes, "scored": scored}
        provenance = {
            "raw_dir": str(raw_dir),
            "files_sha256": {p.relative_to(raw_dir).as_posix(): sha256_file(p)
                             for p in [*table_paths.values(), raw_dir / "SHA256SUMS.txt"] if p.is_file()},
            "resampling": {f"{native:g}": (f"resample_poly {native:g} Hz → {fs} Hz" if rate_ratio(native, fs) != 1
                                           else "none") for native in sorted(rates)},
            "max_seconds": float(max_seconds),
            "n_truncated": len(truncated),
            "folds": "1 + sha256(record name) mod 10",
            "sources": dict(sorted(sources.items())),
            "unknown_codes_policy": "kept" if allow_unknown_codes else "quarantined",
            "records_without_codes": without_codes,
            "input_checks": checks.provenance(tree),
        }
        conversion.finish(
            writer.finish, dataset=NAME, source_version=SOURCE_VERSION, label_sets=label_sets, provenance=provenance,
            norm_folds=sorted(norm_folds),
            extra_attrs={
                "max_seconds": float(max_seconds),
                "truncated": truncated,
                "ptbxl_ids": ptbxl_ids,
                "snomed": {code: snomed.get(code, "") for code in label_sets["all"]},
                "scored_equivalents": equivalents,
                "unknown_codes": extra_codes,
            },
        )
    return conversion.summary(truncated=len(truncated), fs=fs)
