"""One strictness policy for every dataset source: each defect class × each source it applies to, built from the
source's own demo tree (or the real fixtures), converted, and the outcome asserted: the record quarantined with a
reason naming the defect, or the conversion refused with an error naming the file. Classes that cannot apply to a
source are not generated (docs/data-quality.md says why)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile

from helpers import copy_tree, leftovers, read_quarantine
from physiossl.data import checks
from physiossl.data.convert import ConversionError
from physiossl.data.ecg import synth
from physiossl.data.ecg.sources import _code as code_format
from physiossl.data.ecg.sources import chapman, cinc2020, code15, codetest, ptbxl
from physiossl.data.ecg.sources._challenge import read_challenge_record
from physiossl.data.ecg.store import open_store
from physiossl.data.sleep.sources import home_audio, psg_audio
from physiossl.data.sources import source_kind

FEATURES = {"audio_fs": 2000, "n_mels": 16, "n_fft": 256, "win": 200, "hop": 400, "fmin": 30, "fmax": 990}


# --------------------------------------------------------------------------------------------- clean trees
@pytest.fixture(scope="module")
def clean(tmp_path_factory, fixtures) -> dict[str, Path]:
    """One small clean tree per source (and Chapman's WFDB release built around its real record), made once."""
    root = tmp_path_factory.mktemp("bad_input")
    trees = {
        "ptbxl": ptbxl.demo(root / "ptbxl", n_records=6, seed=3),
        "cinc2020": cinc2020.demo(root / "cinc2020", n_records=6, seed=3),
        "chapman": chapman.demo(root / "chapman", n_records=8, seed=3),
        "chapman_wfdb": _chapman_wfdb_tree(root / "chapman_wfdb", fixtures),
        "code15": code15.demo(root / "code15", n_records=8, seed=3, n_parts=1),
        "codetest": codetest.demo(root / "codetest", n_records=6, seed=3),
        "psg_audio": psg_audio.demo(root / "psg_audio", n_records=2, seed=3, minutes=1.5, part_minutes=1),
        "home_audio": home_audio.demo(root / "home_audio", n_records=3, seed=3, minutes=(1.1, 1.4)),
    }
    return trees


def _chapman_wfdb_tree(root: Path, fixtures: Path) -> Path:
    """The PhysioNet WFDB layout of Chapman–Shaoxing: the real record JS00001 and four more written the same way."""
    folder = root / "WFDBRecords" / "01" / "010"
    copy_tree(fixtures / "chapman" / "WFDBRecords", root / "WFDBRecords")
    rng = np.random.default_rng(3)
    for k in range(2, 6):
        signal = synth.synthesize(synth.sample_spec(rng), rng, fs=500)
        cinc2020.write_challenge_record(folder, f"JS{k:05d}", 500, signal,
                                        {"Age": "60", "Sex": "Male", "Dx": "426783006,164934002"})
    return root


def reseal(raw: Path) -> None:
    """Rewrite the tree's SHA256SUMS.txt over its files (a defect that came with the release is in its checksums)."""
    sums = raw / checks.SUMS_FILE
    if sums.is_file():
        lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(raw).as_posix()}"
                 for p in sorted(raw.rglob("*")) if p.is_file() and p.name != checks.SUMS_FILE]
        sums.write_text("\n".join(lines) + "\n")


def add_sums(raw: Path) -> None:
    """Give a tree a SHA256SUMS.txt (as a mirror or the user would)."""
    (raw / checks.SUMS_FILE).write_text("")
    reseal(raw)


def poke_int16(path: Path, offset: int, delta: int = 1) -> None:
    """Change one little-endian int16 at ``offset`` (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    value = int.from_bytes(data[offset:offset + 2], "little", signed=True)
    data[offset:offset + 2] = int(np.clip(value + delta, -32767, 32767)).to_bytes(2, "little", signed=True)
    path.write_bytes(bytes(data))


def insert_byte(path: Path, after: bytes, byte: bytes = b"\xe9") -> None:
    """Put a byte that is not UTF-8 on its own (Latin-1 'é') after the first ``after`` in a text file."""
    data = path.read_bytes()
    at = data.index(after) + len(after)
    path.write_bytes(data[:at] + byte + data[at:])


# --------------------------------------------------------------------------------------------- PTB-XL
PTBXL_REC = "records100/00000/00002_lr"


def _ptbxl_header(raw: Path, n: int) -> None:
    hea = raw / f"{PTBXL_REC}.hea"
    lines = hea.read_text().splitlines()
    lines[0] = re.sub(r" \d+$", f" {n}", lines[0])
    hea.write_text("\n".join(lines) + "\n")


def _ptbxl_codes(raw: Path, codes: str) -> None:
    db = pd.read_csv(raw / "ptbxl_database.csv")
    db.loc[db.ecg_id == 2, "scp_codes"] = codes
    db.to_csv(raw / "ptbxl_database.csv", index=False)


def _ptbxl_signal(raw: Path, change: Callable[[np.ndarray], None]) -> None:
    import wfdb

    stem = raw / PTBXL_REC
    rec = wfdb.rdrecord(str(stem))
    signal = rec.p_signal.T.copy()           # the demo writes the canonical order
    change(signal)
    ptbxl.write_wfdb16(stem.parent, stem.name, 100, signal)   # with the checksums of the new samples


def _ptbxl_dat(raw: Path, f: Callable[[bytes], bytes]) -> None:
    dat = raw / f"{PTBXL_REC}.dat"
    dat.write_bytes(f(dat.read_bytes()))


# --------------------------------------------------------------------------------------------- CinC 2020
CINC_REC = "training/ptb-xl/g1/HR00001"


def _cinc_header(raw: Path, n: int | None = None, dx: Callable[[str], str] | None = None) -> None:
    _cinc_header_at(raw / f"{CINC_REC}.hea", n, dx)


def _cinc_header_at(hea: Path, n: int | None = None, dx: Callable[[str], str] | None = None) -> None:
    """Rewrite a challenge header's sample count (record line) and/or its ``#Dx:`` codes."""
    lines = hea.read_text().splitlines()
    if n is not None:
        parts = lines[0].split()
        parts[3] = str(n)
        lines[0] = " ".join(parts)
    if dx is not None:
        lines = [f"#Dx: {dx(line[5:])}" if line.startswith("#Dx: ") else line for line in lines]
    hea.write_text("\n".join(lines) + "\n")


def _challenge_signal(hea: Path, change: Callable[[np.ndarray], None]) -> None:
    rec = read_challenge_record(hea)
    signal = rec.signal.astype(np.float64)
    change(signal)
    cinc2020.write_challenge_record(hea.parent, hea.stem, rec.fs, signal, rec.comments)


def _mat_sample(hea: Path) -> None:
    """One sample of lead I (column-major int16 after the 24-byte MATLAB v4 header) changed by one unit."""
    poke_int16(hea.with_suffix(".mat"), 24 + 2 * (0 + 12 * 100))


# --------------------------------------------------------------------------------------------- Chapman
def _chapman_first(raw: Path) -> str:
    return sorted(p.stem for p in (raw / "ECGDataDenoised").glob("*.csv"))[0]


def _chapman_csv(raw: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    path = raw / "ECGDataDenoised" / f"{_chapman_first(raw)}.csv"
    data = np.loadtxt(path, delimiter=",")
    np.savetxt(path, change(data), fmt="%.5g", delimiter=",")


def _chapman_labels(raw: Path, rhythm: str | None = None, beat: str | None = None) -> None:
    diag = pd.read_excel(raw / chapman.DIAGNOSTICS)
    row = diag.FileName == _chapman_first(raw)
    if rhythm is not None:
        diag.loc[row, "Rhythm"] = rhythm
    if beat is not None:
        diag.loc[row, "Beat"] = beat
    diag.to_excel(raw / chapman.DIAGNOSTICS, index=False)


CHAPMAN_WFDB_REC = "WFDBRecords/01/010/JS00002"


def _with_snomed_table(raw: Path) -> None:
    (raw / chapman.SNOMED_TABLE).write_bytes(
        "Acronym Name,Full Name,Snomed_CT\nSR,Sinus Rhythm,426783006\nTWC,T wave Change,164934002\n".encode())


# --------------------------------------------------------------------------------------------- CODE
def _code15_row(raw: Path, change: Callable[[np.ndarray], None]) -> str:
    """Change row 0 of the part (an exam, not the padding row); returns its exam_id."""
    with h5py.File(raw / "exams_part0.hdf5", "r+") as fh:
        x = fh["tracings"][0]
        change(x)
        fh["tracings"][0] = x
        return str(int(fh["exam_id"][0]))


def _code15_exam_id(raw: Path) -> None:
    with h5py.File(raw / "exams_part0.hdf5", "r+") as fh:
        ids = fh["exam_id"][:]
        del fh["exam_id"]
        fh.create_dataset("exam_id", data=ids[:-1])


def _zero_lead_in_span(x: np.ndarray, lead: int = 6) -> None:
    start, stop = code_format.valid_spans(x[None])
    x[int(start[0]):int(stop[0]), lead] = 0.0


def _exams_label(raw: Path, exam_id: str) -> None:
    exams = pd.read_csv(raw / "exams.csv", dtype=str)
    exams.loc[exams.exam_id == exam_id, "AF"] = "maybe"
    exams.to_csv(raw / "exams.csv", index=False)


def _first_exam(raw: Path) -> str:
    with h5py.File(raw / "exams_part0.hdf5", "r") as fh:
        return str(int(fh["exam_id"][0]))


def _codetest_row(raw: Path, change: Callable[[np.ndarray], None]) -> None:
    with h5py.File(raw / codetest.TRACINGS, "r+") as fh:
        x = fh["tracings"][1]
        change(x)
        fh["tracings"][1] = x


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------------------------- sleep
PSG_NIGHT = "00000995-100507"


def _psg_part(raw: Path, k: int = 1) -> Path:
    return raw / psg_audio.EDF_DIR / PSG_NIGHT / f"{PSG_NIGHT}[{k:03d}].edf"


def _silence_edf(path: Path, labels: tuple[str, ...]) -> None:
    from pyedflib import highlevel

    signals, headers, header = highlevel.read_edf(str(path), digital=True)
    for x, h in zip(signals, headers):
        if h["label"] in labels:
            x[:] = 0
    highlevel.write_edf(str(path), signals, headers, header, digital=True)


def _psg_stage(raw: Path) -> None:
    rml = raw / psg_audio.RML_DIR / f"{PSG_NIGHT}.rml"
    rml.write_text(rml.read_text().replace('Type="Wake"', 'Type="NonREM5"', 1))


HOME_MONO, HOME_STEREO = "household01/night001", "household02/night002"


def _home_rewrite(raw: Path, night: str, change: Callable[[np.ndarray], None]) -> None:
    path = next(raw.glob(f"{night}.*"))
    info = soundfile.info(str(path))
    data, fs = soundfile.read(str(path), dtype="float32", always_2d=True)
    change(data)
    soundfile.write(str(path), data if info.channels > 1 else data[:, 0], fs, subtype=info.subtype,
                    format=info.format)


# --------------------------------------------------------------------------------------------- the matrix
@dataclass
class Case:
    source: str                    # the dataset source (module name)
    defect: str                    # the defect class, as in docs/data-quality.md
    tree: str                      # which clean tree it starts from
    damage: Callable[[Path], object]
    outcome: str                   # "quarantined" or "refused"
    record: str | Callable[[Path], str] | None   # the quarantined record (None for a refusal)
    pattern: str                   # what the reason / error must say (regex)
    summary: str                   # the outcome as the fault table shows it
    reseal: bool = True            # the defect came with the release (its SHA256SUMS.txt lists the damaged file)
    convert: dict | None = None    # extra convert() arguments


CASES = [
    # ---- PTB-XL
    Case("ptbxl", "header declares fewer samples than the data file holds", "ptbxl",
         lambda r: _ptbxl_header(r, 800), "quarantined", "2",
         r"^sample count mismatch: 00002_lr\.hea and 00002_lr\.dat .*declares 800 samples, the data hold 1000",
         "sample count mismatch (header 800, .dat 1000)"),
    Case("ptbxl", "data file shorter than declared (truncated)", "ptbxl",
         lambda r: _ptbxl_dat(r, lambda d: d[:-2400]), "quarantined", "2",
         r"^sample count mismatch: .*declares 1000 samples, the data hold 900 \(truncated\)",
         "sample count mismatch (truncated .dat)"),
    Case("ptbxl", "unknown label code", "ptbxl", lambda r: _ptbxl_codes(r, "{'XYZ': 100.0}"), "quarantined", "2",
         r"^unknown label code: SCP code 'XYZ' not in scp_statements\.csv \(all of the record's codes\)",
         "unknown label code (the record's only code)"),
    Case("ptbxl", "unknown label code beside known codes", "ptbxl",
         lambda r: _ptbxl_codes(r, "{'NORM': 100.0, 'XYZ': 0.0}"), "quarantined", "2",
         r"^unknown label code: SCP code 'XYZ' not in scp_statements\.csv \(besides 1 known\)",
         "unknown label code (besides a known one)"),
    Case("ptbxl", "header checksum", "ptbxl", lambda r: poke_int16(r / f"{PTBXL_REC}.dat", 2 * 12 * 500),
         "quarantined", "2", r"^checksum mismatch: 00002_lr\.hea: .*I \(header \d+, samples \d+\)",
         "checksum mismatch (lead I)"),
    Case("ptbxl", "local tree vs SHA256SUMS.txt", "ptbxl",
         lambda r: poke_int16(r / f"{PTBXL_REC}.dat", 2 * 12 * 500), "refused", None,
         r"SHA256SUMS\.txt.*records100/00000/00002_lr\.dat: sha256 mismatch",
         "refused: 00002_lr.dat differs from SHA256SUMS.txt", reseal=False),
    Case("ptbxl", "flat lead", "ptbxl", lambda r: _ptbxl_signal(r, lambda x: x.__setitem__(8, 0.25)),
         "quarantined", "2", r"^flat lead: 00002_lr\.hea: lead\(s\) V3 constant over the whole record \(1000",
         "flat lead (V3)"),
    Case("ptbxl", "flat record", "ptbxl", lambda r: _ptbxl_signal(r, lambda x: x.fill(0.0)),
         "quarantined", "2", r"^flat record: 00002_lr\.hea: every lead zero", "flat record (all zero)"),
    Case("ptbxl", "non-UTF-8 CSV", "ptbxl",
         lambda r: insert_byte(r / "ptbxl_database.csv", b"synthetic demo record"), "refused", None,
         r"ptbxl_database\.csv: not UTF-8: byte 0xe9 at offset \d+ \(line 2, column \d+\)",
         "refused: ptbxl_database.csv not UTF-8 (byte, line, column)"),
    Case("ptbxl", "non-UTF-8 CSV", "ptbxl",
         lambda r: insert_byte(r / "scp_statements.csv", b"normal ECG"), "refused", None,
         r"scp_statements\.csv: not UTF-8: byte 0xe9 at offset \d+ \(line \d+, column \d+\)",
         "refused: scp_statements.csv not UTF-8 (byte, line, column)"),
    # ---- CinC 2020
    Case("cinc2020", "header declares fewer samples than the data file holds", "cinc2020",
         lambda r: _cinc_header(r, n=4000), "quarantined", CINC_REC,
         r"^sample count mismatch: HR00001\.hea and HR00001\.mat: header declares 4000 samples, the data hold 5000",
         "sample count mismatch (header 4000, .mat 5000)"),
    Case("cinc2020", "data file shorter than declared (truncated)", "cinc2020",
         lambda r: _cinc_header(r, n=6000), "quarantined", CINC_REC,
         r"^sample count mismatch: .*declares 6000 samples, the data hold 5000 \(truncated\)",
         "sample count mismatch (header 6000, .mat 5000)"),
    Case("cinc2020", "unknown label code", "cinc2020", lambda r: _cinc_header(r, dx=lambda _: "999999999"),
         "quarantined", CINC_REC, r"^unknown label code: SNOMED code '999999999' not in dx_mapping_scored\.csv or "
                                  r"dx_mapping_unscored\.csv \(all of the record's codes\)",
         "unknown label code (the record's only code)"),
    Case("cinc2020", "unknown label code beside known codes", "cinc2020",
         lambda r: _cinc_header(r, dx=lambda d: d + ",999999999"), "quarantined", CINC_REC,
         r"^unknown label code: SNOMED code '999999999' .*\(besides \d+ known\)",
         "unknown label code (besides known ones)"),
    Case("cinc2020", "header checksum", "cinc2020", lambda r: _mat_sample(r / f"{CINC_REC}.hea"),
         "quarantined", CINC_REC, r"^checksum mismatch: .*HR00001\.hea: .*I \(header -?\d+, samples \d+\)",
         "checksum mismatch (lead I)"),
    Case("cinc2020", "local tree vs SHA256SUMS.txt", "cinc2020", lambda r: _mat_sample(r / f"{CINC_REC}.hea"),
         "refused", None, r"SHA256SUMS\.txt.*training/ptb-xl/g1/HR00001\.mat: sha256 mismatch",
         "refused: HR00001.mat differs from SHA256SUMS.txt", reseal=False),
    Case("cinc2020", "flat lead", "cinc2020",
         lambda r: _challenge_signal(r / f"{CINC_REC}.hea", lambda x: x.__setitem__(11, -0.1)),
         "quarantined", CINC_REC, r"^flat lead: .*HR00001\.hea: lead\(s\) V6 constant", "flat lead (V6)"),
    Case("cinc2020", "flat record", "cinc2020",
         lambda r: _challenge_signal(r / f"{CINC_REC}.hea", lambda x: x.fill(0.0)),
         "quarantined", CINC_REC, r"^flat record: .*HR00001\.hea: every lead zero", "flat record (all zero)"),
    Case("cinc2020", "non-UTF-8 CSV", "cinc2020",
         lambda r: insert_byte(r / cinc2020.SCORED_TABLE, b"atrial fibrillation"), "refused", None,
         r"dx_mapping_scored\.csv: not UTF-8: byte 0xe9 at offset \d+ \(line \d+, column \d+\)",
         "refused: dx_mapping_scored.csv not UTF-8 (byte, line, column)"),
    # ---- Chapman–Shaoxing (figshare demo tree; the WFDB release built around the real JS00001)
    Case("chapman", "header declares fewer samples than the data file holds", "chapman",
         lambda r: _chapman_csv(r, lambda x: np.concatenate([x, x[:200]])), "quarantined", _chapman_first,
         r"^sample count mismatch: MUSE_\w+\.csv: 5200 rows, expected 5000",
         "sample count mismatch (CSV of 5200 rows)"),
    Case("chapman", "data file shorter than declared (truncated)", "chapman",
         lambda r: _chapman_csv(r, lambda x: x[:4000]), "quarantined", _chapman_first,
         r"^sample count mismatch: truncated CSV MUSE_\w+\.csv: 4000 rows, expected 5000",
         "sample count mismatch (CSV of 4000 rows)"),
    Case("chapman", "header declares fewer samples than the data file holds", "chapman_wfdb",
         lambda r: _cinc_header_at(r / f"{CHAPMAN_WFDB_REC}.hea", n=4500), "quarantined", "JS00002",
         r"^sample count mismatch: JS00002\.hea and JS00002\.mat: header declares 4500 samples, the data hold 5000",
         "sample count mismatch (WFDB: header 4500, .mat 5000)"),
    Case("chapman", "unknown label code", "chapman", lambda r: _chapman_labels(r, rhythm="XYZ", beat="NONE"),
         "quarantined", _chapman_first,
         r"^unknown label code: rhythm code 'XYZ' not in RhythmNames\.xlsx \(all of the record's codes\)",
         "unknown label code (the record's only code)"),
    Case("chapman", "unknown label code beside known codes", "chapman",
         lambda r: _chapman_labels(r, rhythm="SR", beat="TWC FOO"), "quarantined", _chapman_first,
         r"^unknown label code: condition code 'FOO' not in ConditionNames\.xlsx \(besides 2 known\)",
         "unknown label code (besides known ones)"),
    Case("chapman", "unknown label code beside known codes", "chapman_wfdb",
         lambda r: _cinc_header_at(r / f"{CHAPMAN_WFDB_REC}.hea", dx=lambda d: d + ",XYZ"), "quarantined",
         "JS00002", r"^unknown label code: Dx code 'XYZ' not in SNOMED CT .*\(besides 2 known\)",
         "unknown label code (WFDB: not a SNOMED CT id)"),
    Case("chapman", "header checksum", "chapman_wfdb", lambda r: _mat_sample(r / f"{CHAPMAN_WFDB_REC}.hea"),
         "quarantined", "JS00002", r"^checksum mismatch: .*JS00002\.hea: .*I \(header -?\d+, samples \d+\)",
         "checksum mismatch (WFDB: lead I)"),
    Case("chapman", "local tree vs SHA256SUMS.txt", "chapman",
         lambda r: _chapman_csv(r, lambda x: x + 1.0), "refused", None,
         r"SHA256SUMS\.txt.*ECGDataDenoised/MUSE_\w+\.csv: sha256 mismatch",
         "refused: a record CSV differs from SHA256SUMS.txt", reseal=False),
    Case("chapman", "flat lead", "chapman", lambda r: _chapman_csv(r, lambda x: np.where(
        np.arange(12) == 3, 12.5, x)), "quarantined", _chapman_first,
         r"^flat lead: MUSE_\w+\.csv: lead\(s\) aVR constant over the whole record \(5000", "flat lead (aVR)"),
    Case("chapman", "flat record", "chapman", lambda r: _chapman_csv(r, np.zeros_like), "quarantined",
         _chapman_first, r"^flat record: MUSE_\w+\.csv: every lead zero", "flat record (all zero)"),
    Case("chapman", "non-UTF-8 CSV", "chapman",
         lambda r: insert_byte(r / "ECGDataDenoised" / f"{_chapman_first(r)}.csv", b"\n"), "quarantined",
         _chapman_first, r"^not UTF-8: MUSE_\w+\.csv: byte 0xe9 at offset \d+ \(line 2, column 1\)",
         "not UTF-8 (a record's CSV: byte, line, column)"),
    Case("chapman", "non-UTF-8 CSV", "chapman_wfdb",
         lambda r: (_with_snomed_table(r), insert_byte(r / chapman.SNOMED_TABLE, b"Sinus")), "refused", None,
         r"ConditionNames_SNOMED-CT\.csv: not UTF-8: byte 0xe9 at offset \d+ \(line 2, column \d+\)",
         "refused: ConditionNames_SNOMED-CT.csv not UTF-8 (byte, line, column)"),
    # ---- CODE-15%
    Case("code15", "header declares fewer samples than the data file holds", "code15", _code15_exam_id, "refused",
         None, r"exams_part0\.hdf5: 'exam_id' has 8 entries, 'tracings' has 9 rows",
         "refused: exam_id and tracings disagree on the row count"),
    Case("code15", "data file shorter than declared (truncated)", "code15",
         lambda r: _truncate(r / "exams_part0.hdf5"), "refused", None, r"exams_part0\.hdf5",
         "refused: truncated HDF5 part"),
    Case("code15", "unknown label code", "code15", lambda r: _exams_label(r, _first_exam(r)), "quarantined",
         _first_exam, r"unknown label code: label column AF: 'maybe' is not a boolean",
         "unknown label code (label value 'maybe')"),
    Case("code15", "local tree vs SHA256SUMS.txt", "code15",
         lambda r: (r / "exams.csv").write_bytes((r / "exams.csv").read_bytes() + b"\n"), "refused", None,
         r"SHA256SUMS\.txt.*exams\.csv: sha256", "refused: exams.csv differs from SHA256SUMS.txt", reseal=False),
    Case("code15", "flat lead", "code15", lambda r: _code15_row(r, _zero_lead_in_span), "quarantined", _first_exam,
         r"exams_part0\.hdf5 row 0: flat lead: lead\(s\) V1 constant over the whole valid span", "flat lead (V1)"),
    Case("code15", "flat record", "code15", lambda r: _code15_row(r, lambda x: x.fill(0.0)), "quarantined",
         _first_exam, r"exams_part0\.hdf5 row 0: flat record: all-zero tracing", "flat record (all zero)"),
    Case("code15", "non-UTF-8 CSV", "code15", lambda r: insert_byte(r / "exams.csv", b"exam_id"), "refused", None,
         r"exams\.csv: not UTF-8: byte 0xe9 at offset 7 \(line 1, column 8\)",
         "refused: exams.csv not UTF-8 (byte, line, column)"),
    # ---- CODE test set
    Case("codetest", "header declares fewer samples than the data file holds", "codetest",
         lambda r: (r / codetest.ATTRIBUTES).write_text("\n".join((r / codetest.ATTRIBUTES).read_text()
                                                                   .splitlines()[:-1]) + "\n"),
         "refused", None, r"row counts disagree: ecg_tracings\.hdf5 has 6 tracings, attributes\.csv has 5 rows",
         "refused: tracings and attributes.csv disagree on the row count"),
    Case("codetest", "data file shorter than declared (truncated)", "codetest",
         lambda r: _truncate(r / codetest.TRACINGS), "refused", None, r"ecg_tracings\.hdf5",
         "refused: truncated ecg_tracings.hdf5"),
    Case("codetest", "unknown label code", "codetest",
         lambda r: (r / "annotations" / codetest.GOLD).write_text(_gold_with_value(r)), "quarantined", "0",
         r"unknown label code: label column 1dAVb: .*2.* is not a boolean", "unknown label code (label value 2)"),
    Case("codetest", "local tree vs SHA256SUMS.txt", "codetest",
         lambda r: (r / codetest.ATTRIBUTES).write_bytes((r / codetest.ATTRIBUTES).read_bytes() + b"\n"),
         "refused", None, r"SHA256SUMS\.txt.*attributes\.csv: sha256",
         "refused: attributes.csv differs from SHA256SUMS.txt", reseal=False),
    Case("codetest", "flat lead", "codetest", lambda r: _codetest_row(r, lambda x: _zero_lead_in_span(x, 9)),
         "quarantined", "1", r"ecg_tracings\.hdf5 row 1: flat lead: lead\(s\) V4 constant", "flat lead (V4)"),
    Case("codetest", "flat record", "codetest", lambda r: _codetest_row(r, lambda x: x.fill(0.0)), "quarantined",
         "1", r"ecg_tracings\.hdf5 row 1: flat record: all-zero tracing", "flat record (all zero)"),
    Case("codetest", "non-UTF-8 CSV", "codetest", lambda r: insert_byte(r / codetest.ATTRIBUTES, b"age"), "refused",
         None, r"attributes\.csv: not UTF-8: byte 0xe9 at offset 3 \(line 1, column 4\)",
         "refused: attributes.csv not UTF-8 (byte, line, column)"),
    # ---- PSG-Audio
    Case("psg_audio", "header declares fewer samples than the data file holds", "psg_audio",
         lambda r: _psg_part(r).write_bytes(_psg_part(r).read_bytes() + bytes(12314)), "quarantined", PSG_NIGHT,
         r"^sample count mismatch: 00000995-100507\[001\]\.edf .*declares 60 data records, the data hold 61 "
         r"\(more data than declared\)", "sample count mismatch (EDF: 61 data records, header 60)"),
    Case("psg_audio", "data file shorter than declared (truncated)", "psg_audio",
         lambda r: _truncate(_psg_part(r), 0.75), "quarantined", PSG_NIGHT,
         r"^sample count mismatch: 00000995-100507\[001\]\.edf .*declares 60 data records, .*\(truncated\)",
         "sample count mismatch (truncated EDF)"),
    Case("psg_audio", "unknown label code", "psg_audio", _psg_stage, "quarantined", PSG_NIGHT,
         r"^unknown label code: 00000995-100507\.rml: unknown stage Type 'NonREM5'",
         "unknown label code (stage type)"),
    Case("psg_audio", "local tree vs SHA256SUMS.txt", "psg_audio",
         lambda r: (add_sums(r), _truncate(_psg_part(r), 0.75)), "refused", None,
         r"SHA256SUMS\.txt.*APNEA_EDF/00000995-100507/00000995-100507\[001\]\.edf: sha256 mismatch",
         "refused: an EDF part differs from SHA256SUMS.txt", reseal=False),
    Case("psg_audio", "flat lead", "psg_audio",
         lambda r: [_silence_edf(p, ("Tracheal",)) for p in sorted((r / psg_audio.EDF_DIR / PSG_NIGHT).glob("*.edf"))],
         "quarantined", PSG_NIGHT, r"^flat lead: night 00000995-100507: channel\(s\) Tracheal constant over the "
                                   r"whole night .* while Mic carry sound",
         "flat lead (Tracheal silent while Mic is mixed with it)", convert={"channels": ["Mic", "Tracheal"]}),
    Case("psg_audio", "flat record", "psg_audio",
         lambda r: [_silence_edf(p, ("Mic",)) for p in sorted((r / psg_audio.EDF_DIR / PSG_NIGHT).glob("*.edf"))],
         "quarantined", PSG_NIGHT, r"^flat record: night 00000995-100507: the sound is constant over the whole night",
         "flat record (silent night)"),
    # ---- home recordings
    Case("home_audio", "header declares fewer samples than the data file holds", "home_audio",
         lambda r: (r / f"{HOME_MONO}.wav").write_bytes((r / f"{HOME_MONO}.wav").read_bytes() + bytes(999)),
         "quarantined", HOME_MONO, r"^sample count mismatch: night001\.wav: 999 bytes after the last chunk",
         "sample count mismatch (WAV: bytes after the data chunk)"),
    Case("home_audio", "data file shorter than declared (truncated)", "home_audio",
         lambda r: _truncate(r / f"{HOME_MONO}.wav", 0.6), "quarantined", HOME_MONO,
         r"^sample count mismatch: night001\.wav: data chunk: header declares \d+ bytes, the data hold \d+ "
         r"\(truncated\)", "sample count mismatch (truncated WAV)"),
    Case("home_audio", "local tree vs SHA256SUMS.txt", "home_audio",
         lambda r: (add_sums(r), _home_rewrite(r, HOME_MONO, lambda x: x.__imul__(0.5))), "refused", None,
         r"SHA256SUMS\.txt.*household01/night001\.wav: sha256 mismatch",
         "refused: a recording differs from SHA256SUMS.txt", reseal=False),
    Case("home_audio", "flat lead", "home_audio", lambda r: _home_rewrite(r, HOME_STEREO, lambda x: x[:, 1].fill(0)),
         "quarantined", HOME_STEREO, r"^flat lead: night002\.flac: channel\(s\) channel 1 constant over the whole "
                                     r"recording", "flat lead (one stereo channel silent)"),
    Case("home_audio", "flat record", "home_audio", lambda r: _home_rewrite(r, HOME_MONO, lambda x: x.fill(0)),
         "quarantined", HOME_MONO, r"^flat record: night001\.wav: the sound is constant over the whole recording",
         "flat record (silent recording)"),
]


def _gold_with_value(raw: Path) -> str:
    """gold_standard.csv with 2 in row 0's 1dAVb column."""
    lines = (raw / "annotations" / codetest.GOLD).read_text().splitlines()
    cells = lines[1].split(",")
    cells[0] = "2"
    lines[1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _convert(case: Case, raw: Path, out: Path) -> object:
    module = {"ptbxl": ptbxl, "cinc2020": cinc2020, "chapman": chapman, "code15": code15, "codetest": codetest,
              "psg_audio": psg_audio, "home_audio": home_audio}[case.source]
    extra = dict(case.convert or {})
    if source_kind(case.source) == "sleep":
        return module.convert(raw, out, features=FEATURES, max_quarantine_fraction=1.0, progress=False, **extra)
    return module.convert(raw, out, fs=100, max_quarantine_fraction=1.0, progress=False, **extra)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.source}-{c.defect}-{c.summary}".replace(" ", "_") for c in CASES])
def test_bad_input(case, clean, tmp_path, fault):
    raw = copy_tree(clean[case.tree], tmp_path / "raw")
    record = case.record(raw) if callable(case.record) else case.record
    case.damage(raw)
    if case.reseal:
        reseal(raw)
    out = tmp_path / "stores" / f"{case.source}.zarr"
    if case.outcome == "refused":
        with pytest.raises(ConversionError) as info:
            _convert(case, raw, out)
        assert re.search(case.pattern, str(info.value), re.S), str(info.value)
        assert not out.exists() and not (out.parent.exists() and leftovers(out.parent))
        fault(f"bad input: {case.source}", case.defect, f"refused: {case.summary.removeprefix('refused: ')}")
        return
    _convert(case, raw, out)
    quarantined = read_quarantine(out)
    assert set(quarantined) == {record}, quarantined
    assert re.search(case.pattern, quarantined[record]), quarantined[record]
    fault(f"bad input: {case.source}", case.defect, f"quarantined: {case.summary}")


# --------------------------------------------------------------------------------------------- the policy
def test_every_source_and_class_is_covered_or_not_applicable():
    """The matrix above, against the documented one: every (source, class) is a case or documented as n/a."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "data-quality.md").read_text().split("## Matrix")[1]
    sources = ["ptbxl", "chapman", "cinc2020", "code15", "codetest", "psg_audio", "home_audio"]
    classes = ["header declares fewer samples than the data file holds", "data file shorter than declared (truncated)",
               "unknown label code", "unknown label code beside known codes", "header checksum",
               "local tree vs SHA256SUMS.txt", "flat lead", "flat record", "non-UTF-8 CSV"]
    header = next(line for line in doc.splitlines() if line.startswith("| defect |"))
    assert [cell.strip() for cell in header.strip("|").split("|")][1:] == sources
    covered = {(c.source, c.defect) for c in CASES}
    outcomes = {(c.source, c.defect): c.outcome for c in CASES}
    for source in sources:
        for defect in classes:
            row = next(line for line in doc.splitlines() if line.startswith(f"| {defect} |"))
            cell = [cell.strip() for cell in row.strip("|").split("|")][1 + sources.index(source)]
            if (source, defect) in covered:
                assert outcomes[source, defect] in cell, (source, defect, cell)
            else:
                assert cell.startswith("n/a ("), (source, defect, cell)


def test_policy_can_refuse_a_class(clean, tmp_path, monkeypatch):
    """Setting a class to "refuse" in the policy table stops the conversion at the first such record."""
    raw = copy_tree(clean["ptbxl"], tmp_path / "raw")
    _ptbxl_signal(raw, lambda x: x.__setitem__(8, 0.25))
    reseal(raw)
    monkeypatch.setitem(checks.POLICY, "flat_lead", checks.REFUSE)
    out = tmp_path / "ptbxl.zarr"
    with pytest.raises(ConversionError, match=r"flat lead: 00002_lr\.hea: lead\(s\) V3.*POLICY\['flat_lead'\]"):
        ptbxl.convert(raw, out, fs=100, progress=False)
    assert not out.exists()


def test_tree_without_sums_is_logged_and_recorded(clean, tmp_path, caplog):
    """Without SHA256SUMS.txt a tree converts, with a log line and the fact in the store's provenance."""
    raw = copy_tree(clean["cinc2020"], tmp_path / "raw")
    (raw / checks.SUMS_FILE).unlink()
    out = tmp_path / "cinc.zarr"
    with caplog.at_level(logging.WARNING):
        cinc2020.convert(raw, out, fs=100, max_quarantine_fraction=0.0, progress=False)
    assert any("SHA256SUMS.txt" in r.getMessage() and "not verified" in r.getMessage() for r in caplog.records)
    checked = open_store(out).attrs["provenance"]["input_checks"]
    assert checked["sha256sums"] == "not verified: no SHA256SUMS.txt"
    assert checked["policy"] == checks.POLICY


@pytest.mark.parametrize("fs, unread", [(100, "records500"), (500, "records100")])
def test_verified_tree_is_recorded(clean, tmp_path, fs, unread):
    """Every listed file the conversion reads is verified; the other rate's record folder is not (a changed file
    there does not refuse the conversion), and the provenance says so."""
    raw = copy_tree(clean["ptbxl"], tmp_path / "raw")
    next(p for p in sorted((raw / unread).rglob("*.dat"))).write_bytes(b"changed")
    out = tmp_path / "ptbxl.zarr"
    ptbxl.convert(raw, out, fs=fs, max_quarantine_fraction=0.0, progress=False)
    files = [p for p in raw.rglob("*") if p.is_file() and p.name != checks.SUMS_FILE]
    n_read = len([p for p in files if unread not in p.relative_to(raw).parts])
    assert 0 < n_read < len(files)
    assert open_store(out).attrs["provenance"]["input_checks"]["sha256sums"] == \
        f"{n_read} files verified against SHA256SUMS.txt ({unread}/ not read, not verified)"

    read = next(p for p in sorted(files) if p.suffix == ".dat" and unread not in p.relative_to(raw).parts)
    read.write_bytes(b"changed")
    with pytest.raises(ConversionError, match=re.escape(read.relative_to(raw).as_posix()) + ": sha256 mismatch"):
        ptbxl.convert(raw, tmp_path / "refused.zarr", fs=fs, progress=False)


def test_real_fixtures_pass_every_check(fixtures, tmp_path):
    """The genuine records (PTB-XL at both rates, CinC 2021, Chapman's CSV and WFDB record, the Sleep-EDF files)
    trip no check."""
    for fs in (100, 500):
        summary = ptbxl.convert(fixtures / "ptbxl", tmp_path / f"ptbxl{fs}.zarr", fs=fs, max_quarantine_fraction=0.0,
                                progress=False)
        assert summary["quarantined"] == 0 and summary["records"] == 3
    for hea in (fixtures / "cinc2021" / "HR06000.hea",
                fixtures / "chapman" / "WFDBRecords" / "01" / "010" / "JS00001.hea"):
        assert read_challenge_record(hea).signal.shape == (12, 5000)
    csv = fixtures / "chapman" / "ECGDataDenoised" / "MUSE_20180111_155115_19000.csv"
    assert chapman.read_csv_record(csv).shape == (12, 5000)
    for edf in sorted((fixtures / "psg_audio" / "sleep-edf").glob("*.edf")):
        psg_audio.check_edf_size(edf)
