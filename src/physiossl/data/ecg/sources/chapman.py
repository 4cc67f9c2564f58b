"""Chapman–Shaoxing (Zheng et al. 2020): download, demo tree, conversion to the ECG store.

Two releases of the same database are understood; :func:`convert` tells them apart by their files.

**figshare** (collection 10.6084/m9.figshare.c.4560497, v2; 10,646 records, 500 Hz, 10 s, 12 leads)::

    Diagnostics.xlsx          FileName, Rhythm, Beat, PatientAge, Gender, VentricularRate, AtrialRate,
                              QRSDuration, QTInterval, QTCorrected, RAxis, TAxis, QRSCount, QOnset, QOffset,
                              TOffset (one row per record; ``Beat`` holds space-separated condition codes,
                              ``NONE`` for none)
    RhythmNames.xlsx          Acronym Name, Full Name (11 rhythm codes)
    ConditionNames.xlsx       Acronym Name, Full Name (56 condition codes)
    AttributesDictionary.xlsx (optional) column descriptions
    ECGDataDenoised/<FileName>.csv   5000 rows x 12 columns, µV, no header row
    ECGData/<FileName>.csv           the same without denoising, with a lead-name header row

``ECGDataDenoised/`` is used when present, else ``ECGData/``. A CSV's first line is taken as a header when
it is not numeric; its lead names then set the column order, otherwise the columns are the documented order
I, II, III, aVR, aVL, aVF, V1–V6. Signals are µV and are stored in mV.

Label sets: ``rhythm`` (the RhythmNames codes), ``condition`` (the ConditionNames codes) and ``all`` (their
union); classes are the name tables' codes (stripped of the padding spaces the real RhythmNames.xlsx
has), sorted. ``Diagnostics.xlsx`` writes sinus irregularity as ``SA`` while ``RhythmNames.xlsx`` calls it
``SI`` (399 records): :data:`RHYTHM_ALIASES` maps ``SA`` to ``SI`` and the store records the alias in its
provenance. Any other code missing from the name tables quarantines the record.

**PhysioNet WFDB** (``ecg-arrhythmia`` 1.0.0, Zheng, Guo, Chu 2022; 45,152 records)::

    WFDBRecords/<NN>/<NNN>/JSxxxxx.{hea,mat}   challenge format, SNOMED-CT codes in ``#Dx:``
    ConditionNames_SNOMED-CT.csv               Acronym Name, Full Name, Snomed_CT (names 63 of the codes)
    RECORDS, SHA256SUMS.txt, LICENSE.txt

Records are read with :func:`physiossl.data.ecg.sources._challenge.read_challenge_record`. Classes are SNOMED-CT
codes (strings): ``rhythm`` holds the SNOMED codes of the 11 figshare rhythm classes
(:data:`RHYTHM_SNOMED`), ``condition`` every other code named in ``ConditionNames_SNOMED-CT.csv`` or seen in
a header (the csv does not name every code the headers use), ``all`` their union.

Both releases: meta ``record_id`` = ``patient_id`` = the file name (neither release has patient identifiers,
so a patient with several ECGs may fall into several folds); ``source`` = ``chapman``. Folds 1..10 come from
iterative multi-label stratification (Sechidis et al. 2011) on the ``all`` labels, seeded, over the records
sorted by name: a record's fold does not depend on row order or on which signal files are damaged.
Targets (figshare only): ``ventricular_rate`` (VentricularRate, bpm), ``atrial_rate``, ``qrs_duration_ms``,
``qt_interval_ms``, ``qtc_ms``, ``r_axis_deg``, ``t_axis_deg`` from ``Diagnostics.xlsx`` (the machine's
measurements, not a reference standard). ``heart_rate``, like in every store, is derived from the signal by
the store writer (:mod:`physiossl.data.ecg.targets`).

Both releases go through the checks every source shares (:mod:`._checks`, docs/data-quality.md): the tree against
its ``SHA256SUMS.txt`` (refused on a mismatch), a record CSV of other than 5000 rows or not UTF-8, a WFDB header
whose sample count or checksums the ``.mat`` does not match, a flat lead, an unknown code (figshare: missing from
the name tables; WFDB: not a SNOMED CT identifier) quarantine the record.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from ... import checks, hosts
from ...convert import Conversion, ConversionError, UniqueIds, float_or_none
from ...fetch import CorruptArchiveError, DownloadError, fetch_archive_tree, safe_extract_zip
from ...files import atomic_dir, sha256_file
from ...resample import resample
from ...sources import register
from .. import LEADS, synth
from ..store import EcgStoreWriter

log = logging.getLogger(__name__)

NAME = "chapman"
SOURCE_VERSION = "figshare-c.4560497.v2"
WFDB_SOURCE_VERSION = "physionet-ecg-arrhythmia-1.0.0"
#: The figshare collection; ``download(url=URL)`` fetches the files of :data:`FIGSHARE_NAMES` listed by its API.
URL = "https://figshare.com/collections/ChapmanECG/4560497/2"
#: The PhysioNet WFDB release (one zip with SHA256SUMS.txt); ``download(url=WFDB_URL)`` fetches it.
WFDB_URL = ("https://physionet.org/static/published-projects/ecg-arrhythmia/"
            "a-large-scale-12-lead-electrocardiogram-database-for-arrhythmia-study-1.0.0.zip")

NATIVE_FS = 500
NATIVE_SAMPLES = 5000
DEFAULT_NORM_FOLDS = tuple(range(1, 9))
FOLD_SEED = 0
N_FOLDS = 10
CSV_LEADS = LEADS  # documented column order of the headerless ECGDataDenoised CSVs
SIGNAL_DIRS = ("ECGDataDenoised", "ECGData")
DIAGNOSTICS = "Diagnostics.xlsx"
RHYTHM_TABLE = "RhythmNames.xlsx"
CONDITION_TABLE = "ConditionNames.xlsx"
ATTRIBUTES_TABLE = "AttributesDictionary.xlsx"
SNOMED_TABLE = "ConditionNames_SNOMED-CT.csv"
REQUIRED_COLUMNS = ("FileName", "Rhythm", "Beat", "PatientAge", "Gender")
DIAGNOSTICS_COLUMNS = ("FileName", "Rhythm", "Beat", "PatientAge", "Gender", "VentricularRate", "AtrialRate",
                       "QRSDuration", "QTInterval", "QTCorrected", "RAxis", "TAxis", "QRSCount", "QOnset",
                       "QOffset", "TOffset")
TARGETS = {"ventricular_rate": "VentricularRate", "atrial_rate": "AtrialRate", "qrs_duration_ms": "QRSDuration",
           "qt_interval_ms": "QTInterval", "qtc_ms": "QTCorrected", "r_axis_deg": "RAxis", "t_axis_deg": "TAxis"}
#: Diagnostics.xlsx code → name-table code where the two files disagree.
RHYTHM_ALIASES = {"SA": "SI"}
NO_CONDITION = "NONE"
_SEX = {"MALE": "M", "FEMALE": "F", "M": "M", "F": "F"}
_LEAD_ALIASES = {name.upper(): name for name in LEADS}

#: The real RhythmNames.xlsx (acronyms as padded in the file) and ConditionNames.xlsx, for the demo tree.
RHYTHM_NAMES = (
    ("SB  ", "Sinus Bradycardia"), ("SR  ", "Sinus Rhythm"), ("AFIB ", "Atrial Fibrillation"),
    ("ST   ", "Sinus Tachycardia"), ("AF  ", "Atrial Flutter"), ("SI  ", "Sinus Irregularity"),
    ("SVT ", "Supraventricular Tachycardia"), ("AT  ", "Atrial Tachycardia"),
    ("AVNRT", "Atrioventricular  Node Reentrant Tachycardia"), ("AVRT", "Atrioventricular Reentrant Tachycardia"),
    ("SAAWR", "Sinus Atrium to Atrial Wandering Rhythm"),
)
CONDITION_NAMES = (
    ("1AVB", "1 degree atrioventricular block"), ("2AVB", "2 degree atrioventricular block"),
    ("2AVB1", "2 degree atrioventricular block(Type one)"), ("2AVB2", "2 degree atrioventricular block(Type two)"),
    ("3AVB", "3 degree atrioventricular block"), ("ABI", "atrial bigeminy"), ("ALS", "Axis left shift"),
    ("APB", "atrial\xa0premature\xa0beats"), ("AQW", "abnormal Q wave"), ("ARS", "Axis right shift"),
    ("AVB", "atrioventricular block"), ("CCR", "countercolockwise rotation"), ("CR", "colockwise rotation"),
    ("ERV", "Early repolarization of the ventricles"), ("FQRS", "fQRS Wave"),
    ("IDC", "Interior differences conduction"), ("IVB", "Intraventricular block"),
    ("JEB", "junctional escape beat"), ("JPS", "J point shift"), ("JPT", "junctional premature beat"),
    ("LBBB", "left bundle branch block"), ("LBBBB", "left back bundle branch block"),
    ("LFBBB", "left front bundle branch block"), ("LRRI", "Long RR interval"),
    ("LVH", "left ventricle hypertrophy"), ("LVHV", "left ventricle high voltage"),
    ("LVQRSAL", "lower voltage QRS in all lead"), ("LVQRSCL", "lower voltage QRS in chest lead"),
    ("LVQRSLL", "lower voltage QRS in limb lead"), ("MI", "myocardial infarction"),
    ("MIBW", "myocardial infraction in back wall"), ("MIFW", "Myocardial infgraction in the front wall"),
    ("MILW", "Myocardial infraction in the lower wall"), ("MISW", "Myocardial infraction in the side wall"),
    ("PRIE", "PR interval extension"), ("PWC", "P wave Change"), ("QTIE", "QT interval extension"),
    ("RAH", "right atrial hypertrophy"), ("RAHV", "right atrial high voltage"),
    ("RBBB", "right bundle branch block"), ("RVH", "right ventricle hypertrophy"), ("STDD", "ST drop down"),
    ("STE", "ST extension"), ("STTC", "ST-T Change"), ("STTU", "ST tilt up"), ("TWC", "T wave Change"),
    ("TWO", "T wave opposite"), ("UW", "U wave"), ("VB", "ventricular bigeminy"),
    ("VEB", "ventricular escape beat"), ("VFW", "ventricular fusion wave"), ("VPB", "ventricular premature beat"),
    ("VPE", "ventricular preexcitation"), ("VET", "ventricular escape trigeminy"),
    ("WAVN", "Wandering in the atrioventricalualr node"), ("WPW", "WPW"),
)
#: SNOMED-CT codes of the figshare rhythm classes, as ConditionNames_SNOMED-CT.csv gives them (SAAWR shares
#: 195101003 with the condition WAVN; SI is written SA there).
RHYTHM_SNOMED = {
    "SB": "426177001", "SR": "426783006", "AFIB": "164889003", "ST": "427084000", "AF": "164890007",
    "SI": "427393009", "SVT": "426761007", "AT": "713422000", "AVNRT": "233896004", "AVRT": "233897008",
    "SAAWR": "195101003",
}


# --------------------------------------------------------------------------------------------- download
#: the files of figshare collection 4560497 that a conversion reads (``ECGData.zip``, the signals without
#: denoising, 0.75 GB, only with ``with_raw_ecg=True``); AttributesDictionary.xlsx is optional
FIGSHARE_NAMES = (DIAGNOSTICS, RHYTHM_TABLE, CONDITION_TABLE, ATTRIBUTES_TABLE, "ECGDataDenoised.zip")
RAW_ECG_ARCHIVE = "ECGData.zip"


def download(out_dir: Path, url: str = URL, progress: bool = True, *, api: str = hosts.FIGSHARE_API,
             verify: bool = True, with_raw_ecg: bool = False) -> Path:
    """Fetch a release into ``out_dir`` (replaced atomically once everything is verified).

    - ``url`` a figshare collection (default :data:`URL`): figshare's API (``api``) lists the collection's files
      with their MD5 (:func:`physiossl.data.hosts.figshare_collection_files`); each file of
      :data:`FIGSHARE_NAMES` is downloaded resumably into ``out_dir.parent/.downloads/chapman`` and checked
      against its listed size and MD5 (``verify=False`` skips that), the archives are CRC-checked and extracted
      safely, the spreadsheets must open with the expected columns; the API's answer is saved as
      ``HOST_MANIFEST.json`` and ``SHA256SUMS.txt`` is written over the installed tree;
    - ``url`` ending in ``.zip`` (e.g. :data:`WFDB_URL`): a PhysioNet archive, extracted and checked against its
      ``SHA256SUMS.txt``.
    """
    out_dir = Path(out_dir)
    if url.lower().split("?")[0].endswith(".zip"):
        return fetch_archive_tree(url, out_dir, sums_file="SHA256SUMS.txt" if verify else None, progress=progress)
    collection = hosts.figshare_collection_id(url)
    if collection is None:
        raise DownloadError(f"{url}: neither a figshare collection URL (like {URL}) nor a PhysioNet .zip; for a "
                            f"copy of the release on disk use the dataset's mode: local")
    listed, answer = hosts.figshare_collection_files(collection, api)
    names = [*FIGSHARE_NAMES, *([RAW_ECG_ARCHIVE] if with_raw_ecg else [])]
    chosen = hosts.select(listed, names, f"figshare collection {collection} ({api})", optional=(ATTRIBUTES_TABLE,))
    fetched = hosts.fetch_files(chosen, out_dir.parent / ".downloads" / NAME, verify=verify, progress=progress)
    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, path in fetched.items():
            if name.endswith(".zip"):
                _extract_signal_archive(path, tmp, Path(name).stem, verified=verify)
            else:
                shutil.copyfile(path, tmp / name)
        _check_downloaded_tree(tmp)
        hosts.write_manifest(tmp, "figshare", url, chosen, answer)
        _write_sha256sums(tmp)
    return out_dir


def _extract_signal_archive(archive: Path, tree: Path, folder: str, verified: bool) -> None:
    """Extract a figshare signal zip so that its CSVs land in ``tree/folder/`` (the zips carry that folder
    at their top level; an archive without it is extracted into it). Every member's CRC is checked while
    extracting; a corrupt archive that was not verified against its host's MD5 is deleted so that a rerun
    fetches it again."""
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if not n.startswith("__MACOSX")]
        except zipfile.BadZipFile as exc:
            raise CorruptArchiveError(f"{archive}: not a valid zip archive ({exc})") from exc
        tops = {n.replace("\\", "/").split("/", 1)[0] for n in names if n.strip("/")}
        target = tree if tops == {folder} else tree / folder
        safe_extract_zip(archive, target)
    except CorruptArchiveError as exc:
        if verified:
            raise
        archive.unlink(missing_ok=True)
        raise CorruptArchiveError(f"{exc} (removed {archive} so that a rerun downloads it again)") from exc
    shutil.rmtree(tree / "__MACOSX", ignore_errors=True)


def _check_downloaded_tree(tree: Path) -> None:
    """The spreadsheets must open with the expected columns and a signal folder must exist."""
    try:
        diag = read_diagnostics(tree)
        read_name_tables(tree)
    except ConversionError as exc:
        raise DownloadError(f"downloaded tree fails its checks: {exc}") from exc
    signal_dir = _signal_dir(tree)
    if signal_dir is None:
        raise DownloadError(f"downloaded tree {tree} has no {' or '.join(SIGNAL_DIRS)} folder")
    have = {p.stem for p in signal_dir.glob("*.csv")}
    missing = [f for f in diag["FileName"].astype(str) if f not in have]
    if missing:
        log.warning("%d of %d records in %s have no CSV in %s/ (e.g. %s); conversion will quarantine them",
                    len(missing), len(diag), DIAGNOSTICS, signal_dir.name, missing[:3])


def _write_sha256sums(root: Path) -> None:
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SHA256SUMS.txt"]
    (root / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- demo
#: synth.py statements → Chapman codes (rhythm codes as Diagnostics.xlsx writes them: sinus arrhythmia
#: is ``SA`` there, converted to the name table's ``SI``).
DEMO_RHYTHMS = {"SR": "SR", "SBRAD": "SB", "STACH": "ST", "AFIB": "AFIB", "SARRH": "SA"}
DEMO_CONDITIONS = {"IMI": "MILW", "LVH": "LVHV", "CLBBB": "LBBB", "CRBBB": "RBBB", "1AVB": "1AVB",
                   "LVOLT": "LVQRSLL", "NDT": "TWC", "PVC": "VPB"}


def write_csv_uv(path: Path, signal_mv: np.ndarray, header: bool = False) -> None:
    """Write (12, T) mV as a Chapman CSV: T rows x 12 columns in µV, 5 significant digits like the real
    files; ``header=True`` adds the lead-name row of the ``ECGData`` variant."""
    with open(path, "w", newline="") as fh:
        if header:
            fh.write(",".join(CSV_LEADS) + "\n")
        np.savetxt(fh, np.asarray(signal_mv, np.float64).T * 1000.0, fmt="%.5g", delimiter=",")


def _demo_row(name: str, spec: synth.EcgSpec, rng: np.random.Generator) -> dict:
    hr = spec.heart_rate
    rr_ms = 60000.0 / hr
    bbb = bool({"CLBBB", "CRBBB"} & set(spec.morphologies))
    qrs = int(rng.integers(120, 170) if bbb else rng.integers(76, 104))
    qt = int(round(280.0 * math.sqrt(rr_ms / 1000.0) + 80 + rng.normal(0, 10)))
    q_onset = int(rng.integers(200, 232))
    conditions = sorted(DEMO_CONDITIONS[m] for m in spec.morphologies)
    return {
        "FileName": name, "Rhythm": DEMO_RHYTHMS[spec.rhythm],
        "Beat": " ".join(conditions) if conditions else NO_CONDITION,
        "PatientAge": int(rng.integers(18, 96)), "Gender": str(rng.choice(["MALE", "FEMALE"])),
        "VentricularRate": int(round(hr)),
        "AtrialRate": int(rng.integers(250, 480)) if spec.rhythm == "AFIB" else int(round(hr)),
        "QRSDuration": qrs, "QTInterval": qt, "QTCorrected": int(round(qt / math.sqrt(rr_ms / 1000.0))),
        "RAxis": int(rng.integers(-30, 91)), "TAxis": int(rng.integers(-10, 80)),
        "QRSCount": int(round(hr / 6.0)), "QOnset": q_onset, "QOffset": q_onset + qrs // 2,
        "TOffset": q_onset + qt // 2,
    }


def demo(out_dir: Path, n_records: int = 1500, seed: int = 0) -> Path:
    """Write a figshare-format tree of ``n_records`` synthetic records (seeded): ``ECGDataDenoised/*.csv``
    in µV without header, ``Diagnostics.xlsx`` with the real 16 columns, the real name tables, and the
    ``SHA256SUMS.txt`` that :func:`download` writes over the tree it installs."""
    rng = np.random.default_rng(seed)
    stamp = datetime(2018, 1, 11, 8, 0, 0)
    rows = []
    with atomic_dir(Path(out_dir)) as tmp:
        signal_dir = tmp / "ECGDataDenoised"
        signal_dir.mkdir(parents=True)
        for _ in tqdm(range(n_records), desc="chapman demo", unit="rec"):
            spec = synth.sample_spec(rng)
            signal = synth.synthesize(spec, rng, fs=NATIVE_FS)
            stamp += timedelta(seconds=int(rng.integers(40, 1800)))
            name = f"MUSE_{stamp:%Y%m%d_%H%M%S}_{int(rng.integers(0, 100)) * 1000:05d}"
            write_csv_uv(signal_dir / f"{name}.csv", signal)
            rows.append(_demo_row(name, spec, rng))
        pd.DataFrame(rows, columns=list(DIAGNOSTICS_COLUMNS)).to_excel(tmp / DIAGNOSTICS, index=False)
        pd.DataFrame(RHYTHM_NAMES, columns=["Acronym Name", "Full Name"]).to_excel(tmp / RHYTHM_TABLE, index=False)
        pd.DataFrame(CONDITION_NAMES, columns=["Acronym Name", "Full Name"]).to_excel(tmp / CONDITION_TABLE,
                                                                                        index=False)
        _write_sha256sums(tmp)          # as download() writes over the installed tree
    return Path(out_dir)


# --------------------------------------------------------------------------------------------- reading
def _read_excel(path: Path, has_columns: Callable[[pd.DataFrame], bool] = lambda table: True) -> pd.DataFrame:
    """The sheet of a workbook that has the expected columns: the only sheet, or the only one of several that
    ``has_columns``; a workbook with none or several such sheets (e.g. a filtered copy added as a sheet) is refused,
    naming its sheets."""
    if not path.is_file():
        raise ConversionError(f"{path}: missing (is {path.parent} a Chapman–Shaoxing figshare tree?)")
    try:
        sheets = pd.read_excel(path, sheet_name=None)
    except ImportError as exc:
        raise ConversionError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl): {exc}") from exc
    except Exception as exc:  # openpyxl/zipfile raise many types for a damaged workbook
        raise ConversionError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from exc
    if len(sheets) == 1:
        return next(iter(sheets.values()))
    matching = [name for name, table in sheets.items() if has_columns(table)]
    if len(matching) != 1:
        raise ConversionError(f"{path}: {len(sheets)} sheets ({', '.join(map(repr, sheets))}), "
                              f"{len(matching)} of them with the expected columns; keep the release's sheet only")
    log.info("%s: reading sheet %r of %d", path, matching[0], len(sheets))
    return sheets[matching[0]]


def _norm_column(name) -> str:
    return re.sub(r"[\s_]", "", str(name)).lower()


def _name_table(path: Path, reader: Callable[..., pd.DataFrame], code_column: str = "acronymname") -> pd.DataFrame:
    table = reader(path, lambda t: code_column in {_norm_column(c) for c in t.columns})
    columns = {_norm_column(c): c for c in table.columns}
    if code_column not in columns:
        raise ConversionError(f"{path}: no 'Acronym Name' column (columns: {list(table.columns)})")
    table = table.rename(columns={columns[code_column]: "code"})
    table["code"] = table["code"].astype(str).str.strip()
    table = table[(table["code"] != "") & (table["code"].str.lower() != "nan")]
    return table.rename(columns={orig: key for key, orig in columns.items() if key != code_column})


def read_name_tables(raw_dir: Path) -> dict[str, dict[str, str]]:
    """``{"rhythm": {code: full name}, "condition": {...}}`` from RhythmNames.xlsx / ConditionNames.xlsx."""
    raw_dir = Path(raw_dir)
    out = {}
    for key, name in (("rhythm", RHYTHM_TABLE), ("condition", CONDITION_TABLE)):
        table = _name_table(raw_dir / name, _read_excel)
        full = table["fullname"] if "fullname" in table.columns else pd.Series([""] * len(table), index=table.index)
        out[key] = {code: ("" if pd.isna(f) else str(f).strip()) for code, f in zip(table["code"], full)}
        if not out[key]:
            raise ConversionError(f"{raw_dir / name}: lists no codes")
    return out


def read_diagnostics(raw_dir: Path) -> pd.DataFrame:
    path = Path(raw_dir) / DIAGNOSTICS
    diag = _read_excel(path, lambda table: all(c in table.columns for c in REQUIRED_COLUMNS))
    missing = [c for c in REQUIRED_COLUMNS if c not in diag.columns]
    if missing:
        raise ConversionError(f"{path}: missing columns {missing} (has {list(diag.columns)})")
    if len(diag) == 0:
        raise ConversionError(f"{path}: no rows")
    return diag


def parse_labels(rhythm, beat, rhythm_codes: Iterable[str],
                 condition_codes: Iterable[str]) -> tuple[list[str], list[str]]:
    """The rhythm and condition codes of one Diagnostics row; ValueError names an unknown or missing code."""
    rhythm_codes, condition_codes = set(rhythm_codes), set(condition_codes)
    if not isinstance(rhythm, str) or not rhythm.strip():
        raise ValueError(f"missing Rhythm ({rhythm!r})")
    r = RHYTHM_ALIASES.get(rhythm.strip(), rhythm.strip())
    if not isinstance(beat, str) or not beat.strip():
        raise ValueError(f"missing Beat ({beat!r}); expected condition codes or {NO_CONDITION}")
    codes = beat.split()
    conditions = [] if codes == [NO_CONDITION] else codes
    # an unknown code quarantines the record (whether or not it has known ones): nothing is dropped silently
    checks.check_codes([r], rhythm_codes, RHYTHM_TABLE, what="rhythm code", of=1 + len(conditions))
    checks.check_codes(conditions, condition_codes, CONDITION_TABLE, what="condition code", of=1 + len(conditions))
    return [r], sorted(set(conditions))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_record(path: Path, n_samples: int = NATIVE_SAMPLES) -> np.ndarray:
    """One figshare CSV as (12, n_samples) float64 in mV, canonical lead order; ValueError on any defect.

    A non-numeric first line is a lead-name header (``ECGData``) and sets the column order; without one the
    columns are I, II, III, aVR, aVL, aVF, V1–V6 (``ECGDataDenoised``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"missing CSV {path.parent.name}/{path.name}")
    try:
        return _read_csv_record(path, n_samples)
    except UnicodeDecodeError as exc:
        raise checks.defect("encoding", f"{path.name}: {checks.utf8_problem(path) or exc}") from exc


def _read_csv_record(path: Path, n_samples: int) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as fh:
        first = fh.readline()
    if not first.strip():
        raise ValueError(f"empty CSV {path.name}")
    fields = [f.strip().strip('"').strip() for f in first.strip().split(",")]
    header = not all(_is_number(f) for f in fields if f)
    if header:
        names = [_LEAD_ALIASES.get(f.upper()) for f in fields]
        missing = [lead for lead in LEADS if lead not in names]
        if missing or len(fields) != len(LEADS):
            raise ValueError(f"header names {len(fields)} columns {fields}; missing lead(s) {missing}"
                             if missing else f"header names {len(fields)} columns {fields}, expected the 12 leads")
        order = [names.index(lead) for lead in LEADS]
    else:
        names = list(CSV_LEADS)
        order = list(range(len(LEADS)))
    try:
        data = pd.read_csv(path, header=None, skiprows=1 if header else 0, dtype=np.float64).to_numpy()
    except UnicodeDecodeError:
        raise
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"unreadable CSV {path.name}: {type(exc).__name__}: {exc}") from exc
    if data.ndim != 2 or data.shape[1] != len(LEADS):
        raise ValueError(f"{data.shape[1] if data.ndim == 2 else 0} columns, expected 12 (one per lead)")
    if data.shape[0] < n_samples:
        raise checks.defect("sample_count", f"truncated CSV {path.name}: {data.shape[0]} rows, expected {n_samples} "
                                            f"(10 s at 500 Hz)")
    if data.shape[0] > n_samples:
        raise checks.defect("sample_count", f"{path.name}: {data.shape[0]} rows, expected {n_samples} (10 s at 500 Hz)")
    bad = ~np.isfinite(data)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(f"{int(bad.sum())} NaN/non-finite samples (first at row {int(rows[0]) + 1}, "
                         f"column {int(cols[0]) + 1})")
    checks.check_flat(data, names, path.name, time_axis=0)
    return np.ascontiguousarray(data[:, order].T) / 1000.0


# --------------------------------------------------------------------------------------------- folds
def stratified_folds(ids: Sequence[str], labels: Sequence[Sequence[str]], n_folds: int = N_FOLDS,
                     seed: int = FOLD_SEED) -> dict[str, int]:
    """Folds 1..n_folds by iterative multi-label stratification (Sechidis, Tsoumakas, Vlahavas 2011).

    Records are taken in sorted-id order so the result depends only on (ids, labels, seed). The rarest
    remaining label is placed first, each of its records going to the fold that most lacks that label
    (ties: the fold that most lacks records, then a seeded random choice). Records without labels fill
    the folds that most lack records.
    """
    order = sorted(range(len(ids)), key=lambda i: str(ids[i]))
    classes = sorted({c for i in order for c in labels[i]})
    index = {c: k for k, c in enumerate(classes)}
    n = len(order)
    y = np.zeros((n, len(classes)), dtype=np.int64)
    for row, i in enumerate(order):
        for c in labels[i]:
            y[row, index[c]] = 1
    rng = np.random.default_rng(seed)
    # integer "desire" scaled by n_folds: desired count minus n_folds x assigned, for exact tie tests
    want_label = np.tile(y.sum(axis=0), (n_folds, 1))
    want_total = np.full(n_folds, n, dtype=np.int64)
    fold = np.zeros(n, dtype=np.int64)
    left = y.sum(axis=0)
    unassigned = np.ones(n, dtype=bool)

    def pick(candidates: np.ndarray) -> int:
        return int(candidates[0]) if len(candidates) == 1 else int(rng.choice(candidates))

    while unassigned.any():
        live = np.flatnonzero(left > 0)
        if len(live) == 0:
            for row in np.flatnonzero(unassigned):
                f = pick(np.flatnonzero(want_total == want_total.max()))
                fold[row], unassigned[row] = f + 1, False
                want_total[f] -= n_folds
            break
        counts = left[live]
        label = pick(live[counts == counts.min()])
        rows = np.flatnonzero(unassigned & (y[:, label] == 1))
        rng.shuffle(rows)
        for row in rows:
            w = want_label[:, label]
            cand = np.flatnonzero(w == w.max())
            if len(cand) > 1:
                t = want_total[cand]
                cand = cand[t == t.max()]
            f = pick(cand)
            fold[row], unassigned[row] = f + 1, False
            want_label[f] -= n_folds * y[row]
            want_total[f] -= n_folds
            left -= y[row]
    return {str(ids[i]): int(fold[row]) for row, i in enumerate(order)}


# --------------------------------------------------------------------------------------------- convert
@dataclass
class _Candidate:
    record_id: str
    load: Callable[[], tuple[np.ndarray, float]] | None   # → (signal (12, T) mV, fs)
    meta: dict
    labels: dict[str, list[str]]
    targets: dict[str, float]
    error: str | None = None


def _signal_dir(raw_dir: Path) -> Path | None:
    for name in SIGNAL_DIRS:
        if (Path(raw_dir) / name).is_dir():
            return Path(raw_dir) / name
    return None


def detect_layout(raw_dir: Path) -> str:
    raw_dir = Path(raw_dir)
    if (raw_dir / DIAGNOSTICS).is_file():
        return "figshare"
    if (raw_dir / "WFDBRecords").is_dir():
        return "wfdb"
    raise ConversionError(f"{raw_dir}: neither a Chapman–Shaoxing figshare tree ({DIAGNOSTICS}) nor the PhysioNet "
                          f"WFDB release (WFDBRecords/)")


@register("chapman")
def convert(raw_dir: Path, out: Path, fs: int = 100, max_quarantine_fraction: float = 0.01,
            norm_folds: Sequence[int] = DEFAULT_NORM_FOLDS, progress: bool = True, layout: str = "auto",
            fold_seed: int = FOLD_SEED, workers: int = 1) -> dict:
    """Chapman–Shaoxing tree (figshare or PhysioNet WFDB release) → ECG store at ``fs`` Hz.

    500 Hz records are resampled with ``scipy.signal.resample_poly`` (anti-aliased polyphase filter); at
    ``fs=500`` they are stored as read. Records that cannot be used go to ``<out>.quarantine.csv`` with a
    reason; above ``max_quarantine_fraction`` of the records the conversion fails and leaves no store.
    """
    raw_dir, out = Path(raw_dir), Path(out)
    if not raw_dir.is_dir():
        raise ConversionError(f"{raw_dir}: raw tree not found")
    layout = detect_layout(raw_dir) if layout == "auto" else layout
    tree = checks.verify_tree(raw_dir, NAME)
    if layout == "figshare":
        candidates, label_sets, provenance, version = _figshare_candidates(raw_dir, fold_seed)
    elif layout == "wfdb":
        candidates, label_sets, provenance, version = _wfdb_candidates(raw_dir, fold_seed, progress)
    else:
        raise ValueError(f"layout must be 'auto', 'figshare' or 'wfdb', not {layout!r}")
    provenance["resampling"] = "none" if fs == NATIVE_FS else f"resample_poly {NATIVE_FS} Hz → {fs} Hz"
    provenance["input_checks"] = checks.provenance(tree)
    provenance["folds"] = (f"iterative multi-label stratification on label set 'all', records sorted by name, "
                           f"seed {fold_seed}; record-level (no patient ids in the release)")
    return _write(candidates, raw_dir, out, fs, label_sets, provenance, version, max_quarantine_fraction,
                  norm_folds, progress, workers)


def _write(candidates: list[_Candidate], raw_dir: Path, out: Path, fs: int, label_sets: dict, provenance: dict,
           version: str, max_quarantine_fraction: float, norm_folds: Sequence[int], progress: bool,
           workers: int) -> dict:
    n_samples = int(math.ceil(10 * fs))
    norm_folds = set(int(f) for f in norm_folds)
    conversion = Conversion(raw_dir, out, len(candidates), max_fraction=max_quarantine_fraction, desc=NAME,
                            progress=progress)
    with EcgStoreWriter.open(out, capacity=len(candidates), n_samples=n_samples, fs=fs, workers=workers) as writer:
        for cand in conversion.track(candidates):
            with conversion.record(cand.record_id):
                if cand.error:
                    raise ValueError(cand.error)
                signal, native = cand.load()
                signal = resample(np.asarray(signal), native, fs, axis=1)
                if signal.ndim != 2 or signal.shape[0] != len(LEADS):
                    raise ValueError(f"signal of shape {signal.shape}, expected (12, T)")
                if signal.shape[1] > n_samples:
                    raise ValueError(f"{signal.shape[1]} samples at {fs} Hz, longer than 10 s")
                if signal.shape[1] == 0:
                    raise ValueError("no samples")
                writer.append(signal, meta=cand.meta, labels=cand.labels, targets=cand.targets,
                              norm=cand.meta["fold"] in norm_folds)
        conversion.finish(writer.finish, dataset=NAME, source_version=version, label_sets=label_sets,
                          provenance=provenance, norm_folds=sorted(norm_folds))
    return conversion.summary(fs=fs)


def _figshare_candidates(raw_dir: Path, fold_seed: int) -> tuple[list[_Candidate], dict, dict, str]:
    tables = read_name_tables(raw_dir)
    diag = read_diagnostics(raw_dir)
    signal_dir = _signal_dir(raw_dir)
    if signal_dir is None:
        raise ConversionError(f"{raw_dir}: no {' or '.join(SIGNAL_DIRS)} folder with the record CSVs")
    rhythm_classes, condition_classes = sorted(tables["rhythm"]), sorted(tables["condition"])
    label_sets = {"rhythm": rhythm_classes, "condition": condition_classes,
                  "all": sorted(set(rhythm_classes) | set(condition_classes))}
    candidates: list[_Candidate] = []
    ids = UniqueIds("FileName")
    for i, row in enumerate(diag.to_dict("records")):
        name = "" if pd.isna(row["FileName"]) else str(row["FileName"]).strip()
        rid = name or f"{DIAGNOSTICS} row {i + 2}"
        error, labels = None, {}
        try:
            ids.claim(rid, f"row {i + 2} of {DIAGNOSTICS}")
            if not name:
                raise ValueError(f"missing FileName (row {i + 2} of {DIAGNOSTICS})")
            rhythm, conditions = parse_labels(row["Rhythm"], row["Beat"], rhythm_classes, condition_classes)
            labels = {"rhythm": rhythm, "condition": conditions, "all": sorted(set(rhythm) | set(conditions))}
        except ValueError as exc:
            error = str(exc)
        gender = str(row["Gender"]).strip().upper() if isinstance(row["Gender"], str) else ""
        meta = {"record_id": rid, "patient_id": rid, "fold": 0, "age": float_or_none(row["PatientAge"]),
                "sex": _SEX.get(gender, ""), "source": NAME}
        targets = {t: float_or_none(row[c]) for t, c in TARGETS.items() if c in diag.columns}
        targets = {t: (np.nan if v is None else v) for t, v in targets.items()}
        path = signal_dir / f"{rid}.csv"
        candidates.append(_Candidate(rid, (lambda p=path: (read_csv_record(p), NATIVE_FS)), meta, labels, targets,
                                     error))
    valid = [c for c in candidates if c.error is None]
    folds = stratified_folds([c.record_id for c in valid], [c.labels["all"] for c in valid], seed=fold_seed)
    for c in valid:
        c.meta["fold"] = folds[c.record_id]
    files = {n: sha256_file(raw_dir / n) for n in (DIAGNOSTICS, RHYTHM_TABLE, CONDITION_TABLE, ATTRIBUTES_TABLE,
                                                   "SHA256SUMS.txt") if (raw_dir / n).is_file()}
    provenance = {
        "raw_dir": str(raw_dir), "layout": "figshare", "files_sha256": files, "records_from": signal_dir.name,
        "raw_units": "uV", "code_aliases": {"rhythm": dict(RHYTHM_ALIASES)},
        "patient_id": "FileName (the release has no patient identifiers)",
        "class_names": {"rhythm": tables["rhythm"], "condition": tables["condition"]},
    }
    return candidates, label_sets, provenance, SOURCE_VERSION


class _SnomedIds:
    """Contains every string that can be a SNOMED CT identifier (digits only)."""

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code.isdigit()


def _header_dx(hea: Path) -> list[str]:
    """SNOMED codes of a header's ``#Dx:`` comment (for fold stratification before the records are read)."""
    try:
        text = hea.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        match = re.match(r"\s*#\s*Dx\s*:\s*(.*)$", line, re.IGNORECASE)
        if match:
            return [c.strip() for c in match.group(1).split(",") if c.strip()]
    return []


def read_snomed_table(raw_dir: Path) -> dict[str, str]:
    """``{snomed code: acronym(s)}`` from ConditionNames_SNOMED-CT.csv (``{}`` when the file is absent)."""
    path = Path(raw_dir) / SNOMED_TABLE
    if not path.is_file():
        return {}

    def reader(p: Path, _has_columns=None) -> pd.DataFrame:
        try:
            return checks.read_csv_table(p, dtype=str)
        except (ValueError, pd.errors.ParserError) as exc:
            raise ConversionError(f"{p}: unreadable ({type(exc).__name__}: {exc})") from exc

    table = _name_table(path, reader)
    if "snomedct" not in table.columns:
        raise ConversionError(f"{path}: no Snomed_CT column (columns: {list(table.columns)})")
    names: dict[str, list[str]] = {}
    for code, snomed in zip(table["code"], table["snomedct"]):
        if isinstance(snomed, str) and snomed.strip():
            names.setdefault(snomed.strip(), []).append(code)
    return {k: "/".join(v) for k, v in names.items()}


def _wfdb_candidates(raw_dir: Path, fold_seed: int, progress: bool) -> tuple[list[_Candidate], dict, dict, str]:
    from ._challenge import read_challenge_record  # written alongside; imported only for this layout

    headers = sorted((raw_dir / "WFDBRecords").rglob("*.hea"), key=lambda p: (p.stem, str(p)))
    if not headers:
        raise ConversionError(f"{raw_dir / 'WFDBRecords'}: no .hea headers")
    snomed_names = {code: acronym for acronym, code in RHYTHM_SNOMED.items()}
    snomed_names.update(read_snomed_table(raw_dir))
    dx_of = {str(h): _header_dx(h) for h in tqdm(headers, desc="chapman headers", unit="rec", disable=not progress)}
    rhythm_codes = set(RHYTHM_SNOMED.values())
    # the release's csv names only part of the codes its headers use: a code it lacks becomes a class of its own
    # (listed in provenance unnamed_codes); a code that is not a SNOMED CT identifier at all quarantines the record
    not_snomed: dict[str, str] = {}
    for key, codes in dx_of.items():
        try:
            checks.check_codes(codes, _SnomedIds(), "SNOMED CT (identifiers are digit strings)", what="Dx code")
        except ValueError as exc:
            not_snomed[key] = str(exc)
    observed = {c for key, codes in dx_of.items() if key not in not_snomed for c in codes}
    everything = sorted(set(snomed_names) | observed | rhythm_codes)
    label_sets = {"rhythm": sorted(rhythm_codes), "condition": [c for c in everything if c not in rhythm_codes],
                  "all": everything}

    def split(codes: Iterable[str]) -> dict[str, list[str]]:
        codes = sorted(set(codes))
        return {"rhythm": [c for c in codes if c in rhythm_codes],
                "condition": [c for c in codes if c not in rhythm_codes], "all": codes}

    def load(hea: Path, cand: _Candidate) -> tuple[np.ndarray, float]:
        try:
            record = read_challenge_record(hea)
        except (ValueError, ConversionError):  # the reader names the file and the defect
            raise
        except Exception as exc:  # anything else it lets through (scipy.io, wfdb) is a defect of this record too
            raise ValueError(f"unreadable record: {type(exc).__name__}: {exc}") from exc
        signal = np.asarray(record.signal, dtype=np.float64)
        if signal.ndim != 2 or signal.shape[0] != len(LEADS):
            raise ValueError(f"signal of shape {signal.shape}, expected the 12 standard leads")
        bad = ~np.isfinite(signal)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} NaN/non-finite samples")
        cand.labels.update(split(str(c).strip() for c in record.dx if str(c).strip()))
        cand.meta["age"] = float_or_none(record.age)
        cand.meta["sex"] = record.sex if record.sex in ("M", "F") else ""
        return signal, float(record.fs)

    candidates: list[_Candidate] = []
    ids = UniqueIds("record name")
    for hea in headers:
        rid = hea.stem
        try:
            ids.claim(rid, hea.relative_to(raw_dir).as_posix())
            error = not_snomed.get(str(hea))
        except ValueError as exc:
            error = str(exc)
        meta = {"record_id": rid, "patient_id": rid, "fold": 0, "age": None, "sex": "", "source": NAME}
        cand = _Candidate(rid, None, meta, split([] if error else dx_of[str(hea)]), {}, error)
        cand.load = (lambda h=hea, c=cand: load(h, c))
        candidates.append(cand)
    valid = [c for c in candidates if c.error is None]
    folds = stratified_folds([c.record_id for c in valid], [c.labels["all"] for c in valid], seed=fold_seed)
    for c in valid:
        c.meta["fold"] = folds[c.record_id]
    files = {n: sha256_file(raw_dir / n) for n in (SNOMED_TABLE, "RECORDS", "SHA256SUMS.txt")
             if (raw_dir / n).is_file()}
    provenance = {
        "raw_dir": str(raw_dir), "layout": "wfdb", "files_sha256": files, "records_from": "WFDBRecords",
        "patient_id": "record name (the release has no patient identifiers)",
        "class_names": {"all": {c: snomed_names.get(c, "") for c in everything}},
        "unnamed_codes": sorted(observed - set(snomed_names)),  # the csv names only part of the codes
    }
    return candidates, label_sets, provenance, WFDB_SOURCE_VERSION
