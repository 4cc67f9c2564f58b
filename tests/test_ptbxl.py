"""PTB-XL source: conversion of the genuine fixture records, the demo tree's format, quarantine, CLI."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import find_peaks, resample_poly

from helpers import (
    CANONICAL,
    assert_cli_converts,
    assert_failure_keeps_previous_store,
    assert_fraction_failure,
    assert_missing_input_fails,
    copy_tree,
    read_quarantine,
    sha256,
    update_checksums,
    wfdb_canonical,
)
from physiossl.cli import main
from physiossl.data.ecg import LEADS
from physiossl.data.ecg.sources import ptbxl
from physiossl.data.ecg.store import open_store, read_labels, read_meta

RHYTHMS = {"SR", "SBRAD", "STACH", "AFIB", "SARRH"}


@pytest.fixture
def ptbxl_raw(fixtures) -> Path:
    return fixtures / "ptbxl"


@pytest.fixture
def raw_copy(ptbxl_raw, tmp_path) -> Path:
    """A copy of the fixture tree to modify; its SHA256SUMS.txt would (rightly) refuse modified files."""
    raw = copy_tree(ptbxl_raw, tmp_path / "raw")
    (raw / "SHA256SUMS.txt").unlink()
    return raw


@pytest.fixture(scope="module")
def store100(fixtures, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ptbxl100") / "ptbxl_100hz.zarr"
    summary = ptbxl.convert(fixtures / "ptbxl", out, fs=100, progress=False)
    assert summary["records"] == 3 and summary["quarantined"] == 0
    return out


# --------------------------------------------------------------------------------------------- real records
def test_lead_order_constant_is_canonical():
    assert list(LEADS) == CANONICAL


def test_100hz_signals_equal_wfdb(store100, ptbxl_raw):
    root = open_store(store100)
    sig = root["signals"][:]
    assert sig.dtype == np.float32 and sig.shape == (3, 12, 1000)
    assert root["lengths"][:].tolist() == [1000, 1000, 1000]
    db = pd.read_csv(ptbxl_raw / "ptbxl_database.csv")
    for i, rel in enumerate(db.filename_lr):
        expected = wfdb_canonical(ptbxl_raw / rel)
        assert expected.shape == (12, 1000)
        np.testing.assert_array_equal(sig[i], expected)
    # the headers name the augmented leads AVR/AVL/AVF; the store must have mapped them to aVR/aVL/aVF
    hea = (ptbxl_raw / db.filename_lr[0]).with_suffix(".hea").read_text()
    assert " AVR" in hea
    rec = wfdb.rdrecord(str(ptbxl_raw / db.filename_lr[0]))
    np.testing.assert_array_equal(sig[0, 3], rec.p_signal[:, rec.sig_name.index("AVR")].astype(np.float32))
    np.testing.assert_array_equal(sig[0, 11], rec.p_signal[:, rec.sig_name.index("V6")].astype(np.float32))


def test_500hz_signals_equal_wfdb(ptbxl_raw, tmp_path):
    out = tmp_path / "ptbxl_500hz.zarr"
    ptbxl.convert(ptbxl_raw, out, fs=500, progress=False)
    root = open_store(out)
    sig = root["signals"][:]
    assert sig.shape == (3, 12, 5000)
    assert root["lengths"][:].tolist() == [5000] * 3
    assert root.attrs["fs"] == 500
    assert root.attrs["provenance"]["records_from"] == "records500"
    db = pd.read_csv(ptbxl_raw / "ptbxl_database.csv")
    for i, rel in enumerate(db.filename_hr):
        np.testing.assert_array_equal(sig[i], wfdb_canonical(ptbxl_raw / rel))


def test_100hz_meta_from_csv(store100, ptbxl_raw):
    root = open_store(store100)
    meta = read_meta(root)
    db = pd.read_csv(ptbxl_raw / "ptbxl_database.csv")
    assert [str(x) for x in meta["record_id"]] == ["1", "2", "3"]
    assert [str(x) for x in meta["patient_id"]] == [str(int(p)) for p in db.patient_id]
    assert str(meta["patient_id"][0]) == "15709"
    assert [str(x) for x in meta["sex"]] == [{0: "M", 1: "F"}[int(s)] for s in db.sex]
    assert [str(x) for x in meta["sex"]] == ["F", "M", "F"]
    np.testing.assert_array_equal(meta["age"], db.age.to_numpy(np.float32))
    assert meta["fold"].tolist() == db.strat_fold.tolist() == [3, 2, 5]
    assert {str(x) for x in meta["source"]} == {"ptbxl"}


def test_100hz_attrs(store100, ptbxl_raw):
    root = open_store(store100)
    attrs = dict(root.attrs)
    assert attrs["schema"] == "physiossl.ecg/1"
    assert attrs["units"] == "mV"
    assert attrs["fs"] == 100
    assert attrs["leads"] == CANONICAL
    assert attrs["n_records"] == 3
    assert attrs["source_version"] == ptbxl.SOURCE_VERSION
    sizes = {k: len(v) for k, v in attrs["label_sets"].items()}
    assert sizes == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}
    assert attrs["label_sets"]["superdiagnostic"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    norm = attrs["norm"]
    assert len(norm["mean"]) == 12 and len(norm["std"]) == 12
    # the fixture folds 3, 2, 5 are all training folds: the statistics are those of every stored sample
    sig = root["signals"][:].astype(np.float64)
    np.testing.assert_allclose(norm["mean"], sig.mean(axis=(0, 2)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(norm["std"], sig.transpose(1, 0, 2).reshape(12, -1).std(axis=1), rtol=1e-5)
    assert norm["n_samples"] == 3000
    files = attrs["provenance"]["files_sha256"]
    assert files["ptbxl_database.csv"] == sha256(ptbxl_raw / "ptbxl_database.csv")
    assert files["scp_statements.csv"] == sha256(ptbxl_raw / "scp_statements.csv")
    assert attrs["provenance"]["resampling"] == "none"


def test_100hz_labels(store100):
    root = open_store(store100)
    hot, classes = read_labels(root, "all")
    assert hot.shape == (3, 71)
    present = [sorted(classes[j] for j in np.nonzero(row)[0]) for row in hot]
    # likelihood 0.0 (LVOLT, SR, SBRAD) counts as present
    assert present == [["LVOLT", "NORM", "SR"], ["NORM", "SBRAD"], ["NORM", "SR"]]
    hot, classes = read_labels(root, "superdiagnostic")
    assert [[classes[j] for j in np.nonzero(row)[0]] for row in hot] == [["NORM"]] * 3
    hot, classes = read_labels(root, "rhythm")
    assert [[classes[j] for j in np.nonzero(row)[0]] for row in hot] == [["SR"], ["SBRAD"], ["SR"]]
    hot, classes = read_labels(root, "form")
    assert [[classes[j] for j in np.nonzero(row)[0]] for row in hot] == [["LVOLT"], [], []]
    hot, classes = read_labels(root, "subdiagnostic")
    assert [[classes[j] for j in np.nonzero(row)[0]] for row in hot] == [["NORM"]] * 3


def test_250hz_is_polyphase_resampled_from_500hz(ptbxl_raw, tmp_path):
    out = tmp_path / "ptbxl_250hz.zarr"
    ptbxl.convert(ptbxl_raw, out, fs=250, progress=False)
    root = open_store(out)
    sig = root["signals"][:]
    assert sig.shape == (3, 12, 2500)
    assert root["lengths"][:].tolist() == [2500] * 3
    assert root.attrs["fs"] == 250
    prov = root.attrs["provenance"]
    assert prov["records_from"] == "records500" and "resample_poly" in prov["resampling"]
    db = pd.read_csv(ptbxl_raw / "ptbxl_database.csv")
    for i, rel in enumerate(db.filename_hr):
        x500 = wfdb_canonical(ptbxl_raw / rel).astype(np.float64)
        expected = resample_poly(x500, 1, 2, axis=1)
        np.testing.assert_allclose(sig[i], expected, rtol=1e-5, atol=2e-6)
        # anti-aliased, not plain subsampling
        assert not np.allclose(sig[i], x500[:, ::2], atol=1e-4)


# --------------------------------------------------------------------------------------------- demo tree
def test_demo_records_are_wfdb_readable(demo_tree):
    db = pd.read_csv(demo_tree / "ptbxl_database.csv")
    for rel, fs, n in ((db.filename_lr[0], 100, 1000), (db.filename_hr[0], 500, 5000)):
        assert rel.startswith(f"records{fs}/")
        rec = wfdb.rdrecord(str(demo_tree / rel))
        assert rec.n_sig == 12 and rec.fs == fs and rec.sig_len == n
        assert [s.upper() for s in rec.sig_name] == [lead.upper() for lead in CANONICAL]
        assert rec.units == ["mV"] * 12 and rec.fmt == ["16"] * 12
        assert np.isfinite(rec.p_signal).all() and rec.p_signal.std() > 0.01


def test_demo_database_has_the_real_columns(demo_tree, fixtures):
    real = pd.read_csv(fixtures / "ptbxl" / "ptbxl_database.csv")
    db = pd.read_csv(demo_tree / "ptbxl_database.csv")
    assert len(db.columns) == 28
    assert list(db.columns) == list(real.columns)
    assert len(db) == 240 and db.ecg_id.is_unique


def test_demo_labels_folds_and_rhythms(demo_tree):
    db = pd.read_csv(demo_tree / "ptbxl_database.csv")
    scp = pd.read_csv(demo_tree / "scp_statements.csv", index_col=0)
    codes = [ast.literal_eval(s) for s in db.scp_codes]
    assert all(isinstance(c, dict) and c for c in codes)
    assert all(k in scp.index and isinstance(v, float) for c in codes for k, v in c.items())
    assert db.strat_fold.between(1, 10).all()
    per_patient = db.groupby("patient_id").strat_fold.nunique()
    assert (per_patient == 1).all()
    assert (db.groupby("patient_id").size() > 1).any(), "no patient with several records: fold check is vacuous"
    assert db.strat_fold.nunique() >= 5
    rhythms = {k for c in codes for k in c if k in RHYTHMS}
    assert len(rhythms) >= 3 and {"SBRAD", "STACH"} <= rhythms
    morph = {k for c in codes for k in c if k not in RHYTHMS and k != "NORM"}
    assert len(morph) >= 3
    n_statements = np.array([len(c) for c in codes])
    assert (n_statements > 1).any() and (n_statements > 2).any()


def test_demo_heart_rates_follow_rhythm_labels(demo_tree):
    db = pd.read_csv(demo_tree / "ptbxl_database.csv")
    rates: dict[str, list[float]] = {"SBRAD": [], "STACH": []}
    for rel, text in zip(db.filename_hr, db.scp_codes):
        rhythm = [k for k in ast.literal_eval(text) if k in rates]
        if not rhythm:
            continue
        x = wfdb.rdrecord(str(demo_tree / rel), channels=[1]).p_signal[:, 0]
        x = x - np.median(x)
        peaks, _ = find_peaks(x, distance=125, prominence=0.5 * np.percentile(np.abs(x), 99.5))
        rates[rhythm[0]].append(len(peaks) * 6.0)
    assert len(rates["SBRAD"]) >= 3 and len(rates["STACH"]) >= 3
    assert np.median(rates["STACH"]) > np.median(rates["SBRAD"]) + 30


def test_demo_is_seeded(tmp_path):
    a = ptbxl.demo(tmp_path / "a", n_records=3, seed=5)
    b = ptbxl.demo(tmp_path / "b", n_records=3, seed=5)
    c = ptbxl.demo(tmp_path / "c", n_records=3, seed=6)
    rel = "records100/00000/00002_lr.dat"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    assert (a / "ptbxl_database.csv").read_bytes() == (b / "ptbxl_database.csv").read_bytes()


def test_demo_store_converts(demo_store):
    root = open_store(demo_store)
    assert root.attrs["n_records"] == 240
    assert read_quarantine(demo_store) == {}


# --------------------------------------------------------------------------------------------- quarantine
def _convert_damaged(raw: Path, tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "stores" / "ptbxl.zarr"
    summary = ptbxl.convert(raw, out, fs=100, max_quarantine_fraction=1.0, progress=False)
    return out, summary


def _assert_quarantined(out: Path, summary: dict, bad: str, pattern: str, kept=("1", "2", "3")) -> None:
    import re

    kept = [k for k in kept if k != bad]
    root = open_store(out)
    assert [str(x) for x in read_meta(root)["record_id"]] == kept
    assert root["signals"].shape[0] == len(kept) == summary["records"]
    q = read_quarantine(out)
    assert list(q) == [bad]
    assert re.search(pattern, q[bad], re.IGNORECASE), q[bad]
    assert summary["quarantined"] == 1


def test_quarantine_truncated_dat(raw_copy, tmp_path, ptbxl_raw):
    dat = raw_copy / "records100/00000/00002_lr.dat"
    data = dat.read_bytes()
    dat.write_bytes(data[: len(data) // 2])
    out, summary = _convert_damaged(raw_copy, tmp_path)
    _assert_quarantined(out, summary, "2", r"unreadable|samples|truncat")
    # the records that remain are intact
    sig = open_store(out)["signals"][:]
    np.testing.assert_array_equal(sig[1], wfdb_canonical(ptbxl_raw / "records100/00000/00003_lr"))


def test_quarantine_malformed_header(raw_copy, tmp_path):
    hea = raw_copy / "records100/00000/00001_lr.hea"
    lines = hea.read_text().splitlines()
    lines.insert(4, "@@ this is not a signal line ###")
    hea.write_text("\n".join(lines) + "\n")
    out, summary = _convert_damaged(raw_copy, tmp_path)
    _assert_quarantined(out, summary, "1", r"header|syntax|unreadable")


def test_quarantine_wrong_lead_count(raw_copy, tmp_path):
    hea = raw_copy / "records100/00000/00003_lr.hea"
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace("00003_lr 12 ", "00003_lr 11 ")
    assert " 11 " in lines[0]
    hea.write_text("\n".join(lines[:-1]) + "\n")  # 11 signal lines: a consistent header
    out, summary = _convert_damaged(raw_copy, tmp_path)
    _assert_quarantined(out, summary, "3", r"12 standard leads|11|lead")


def test_quarantine_nan_sample(raw_copy, tmp_path):
    dat = raw_copy / "records100/00000/00002_lr.dat"
    samples = np.fromfile(dat, dtype="<i2")
    samples[12 * 100 + 4] = -32768  # WFDB format 16's "no sample" value, read as NaN
    samples.tofile(dat)
    update_checksums(dat.with_suffix(".hea"), samples.reshape(-1, 12))   # as a record written with it would have
    assert np.isnan(wfdb.rdrecord(str(dat.with_suffix(""))).p_signal).sum() == 1
    out, summary = _convert_damaged(raw_copy, tmp_path)
    _assert_quarantined(out, summary, "2", r"non-finite|nan")
    assert np.isfinite(open_store(out)["signals"][:]).all()


def test_quarantine_duplicate_ecg_id(raw_copy, tmp_path):
    db_path = raw_copy / "ptbxl_database.csv"
    lines = db_path.read_text().splitlines()
    db_path.write_text("\n".join(lines + [lines[2]]) + "\n")  # ecg_id 2 a second time
    out, summary = _convert_damaged(raw_copy, tmp_path)
    root = open_store(out)
    assert [str(x) for x in read_meta(root)["record_id"]] == ["1", "2", "3"]
    q = read_quarantine(out)
    assert list(q) == ["2"] and "duplicate" in q["2"].lower()
    assert summary == {**summary, "records": 3, "quarantined": 1}


def test_quarantine_malformed_scp_codes(raw_copy, tmp_path):
    db_path = raw_copy / "ptbxl_database.csv"
    text = db_path.read_text()
    bad = text.replace("\"{'NORM': 80.0, 'SBRAD': 0.0}\"", "\"{'NORM': 80.0, 'SBRAD': \"", 1)
    assert bad != text
    db_path.write_text(bad)
    out, summary = _convert_damaged(raw_copy, tmp_path)
    _assert_quarantined(out, summary, "2", r"scp_codes")


def test_quarantine_above_fraction_fails_cleanly(raw_copy, tmp_path):
    dat = raw_copy / "records100/00000/00001_lr.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    quarantined = assert_fraction_failure(ptbxl.convert, raw_copy, tmp_path / "stores" / "ptbxl.zarr", 0.0)
    assert list(quarantined) == ["1"]


def test_failed_conversion_keeps_previous_store(raw_copy, tmp_path):
    assert_failure_keeps_previous_store(
        ptbxl.convert, raw_copy, tmp_path / "stores" / "ptbxl.zarr",
        lambda: (raw_copy / "records100/00000/00003_lr.dat").write_bytes(b"\0" * 10), n_records=3)


@pytest.mark.parametrize("name", ["ptbxl_database.csv", "scp_statements.csv"])
def test_missing_csv(raw_copy, tmp_path, name):
    assert_missing_input_fails(ptbxl.convert, raw_copy, name, tmp_path / "ptbxl.zarr")


# --------------------------------------------------------------------------------------------- CLI
def test_cli_convert_missing_raw_dir(tmp_path, capsys):
    missing = tmp_path / "no_such_tree"
    code = main(["convert", "ptbxl", "--raw", str(missing), "--out", str(tmp_path / "s.zarr")])
    assert code != 0
    err = capsys.readouterr().err
    assert str(missing) in err
    assert not (tmp_path / "s.zarr").exists()


def test_cli_convert_fixture_tree(raw_copy, tmp_path, capsys):
    assert_cli_converts(capsys, "ptbxl", raw_copy, tmp_path / "cli.zarr", 3, "--fs", "100")


def test_permuted_lead_order_is_mapped_by_name(raw_copy, ptbxl_raw, tmp_path):
    """A record whose header lists the leads in another order (data permuted alike) is stored canonically."""
    stem = raw_copy / "records100/00000/00002_lr"
    perm = [11, 3, 0, 7, 5, 1, 9, 4, 2, 10, 6, 8]
    samples = np.fromfile(stem.with_suffix(".dat"), dtype="<i2").reshape(-1, 12)
    np.ascontiguousarray(samples[:, perm]).tofile(stem.with_suffix(".dat"))
    lines = stem.with_suffix(".hea").read_text().splitlines()
    stem.with_suffix(".hea").write_text("\n".join([lines[0]] + [lines[1 + k] for k in perm]) + "\n")
    assert wfdb.rdrecord(str(stem)).sig_name[:2] == ["V6", "AVR"]
    out = tmp_path / "perm.zarr"
    ptbxl.convert(raw_copy, out, fs=100, max_quarantine_fraction=0.0, progress=False)
    np.testing.assert_array_equal(open_store(out)["signals"][1],
                                  wfdb_canonical(ptbxl_raw / "records100/00000/00002_lr"))


def test_a_trimmed_tree_converts_and_a_record_whose_file_is_gone_is_quarantined(demo_tree, tmp_path, caplog):
    """A user who deleted `records500/` to save space (its lines still in SHA256SUMS.txt) converts at 100 Hz, which
    does not read that folder; a record whose 100 Hz file is gone too is quarantined as unreadable, and the store's
    provenance counts that absent file. A file that is there but differs is still refused
    (tests/test_bad_input.py)."""
    raw = copy_tree(demo_tree, tmp_path / "raw")
    shutil.rmtree(raw / "records500")
    gone = sorted((raw / "records100").rglob("*_lr.dat"))[0]
    gone.unlink()
    out = tmp_path / "ptbxl_100hz.zarr"
    with caplog.at_level("WARNING"):
        ptbxl.convert(raw, out, fs=100, progress=False, max_quarantine_fraction=0.01)
    assert "files that SHA256SUMS.txt lists are absent" in caplog.text
    quarantined = read_quarantine(out)
    assert list(quarantined) == [str(int(gone.name.split("_")[0]))]
    checks = open_store(out).attrs["provenance"]["input_checks"]
    assert checks["sha256sums"].endswith("(records500/ not read, not verified), 1 listed files absent")
    assert gone.name in caplog.text
