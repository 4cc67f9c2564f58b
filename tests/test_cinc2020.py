"""PhysioNet/CinC 2020 source: the challenge-format reader on genuine records (and wfdb-rejected headers),
the demo tree's format, conversion (rates, lengths, labels, PTB-XL ids), quarantine, download and CLI."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb
from scipy.signal import resample_poly

from helpers import (
    assert_cli_converts,
    assert_failure_keeps_previous_store,
    assert_fraction_failure,
    assert_missing_input_fails,
    copy_tree,
    read_quarantine,
    update_checksums,
    wfdb_canonical,
)
from physiossl.cli import main
from physiossl.data.ecg import LEADS
from physiossl.data.ecg.sources import cinc2020
from physiossl.data.ecg.sources._challenge import _read_fallback, read_challenge_record
from physiossl.data.ecg.store import open_store, read_labels, read_meta
from physiossl.data.sources import available, get_source

SOURCE_DIRS = {"cpsc_2018": 500, "cpsc_2018_extra": 500, "st_petersburg_incart": 257, "ptb": 1000,
               "ptb-xl": 500, "georgia": 500}
N_DEMO = 30
REJECTED_RECORD_LINE = "HR06000 12 500 5000 15:11:55 04-Jun-2020"   # time, then date: wfdb refuses it


# --------------------------------------------------------------------------------------------- helpers
def header_calibration(hea: Path) -> tuple[np.ndarray, np.ndarray]:
    """(gain, baseline) per signal line of a header, parsed independently of the package."""
    gains, baselines = [], []
    for line in hea.read_text().splitlines()[1:]:
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([-0-9.]+)(?:\((-?\d+)\))?/", line.split()[2])
        gains.append(float(m.group(1)))
        baselines.append(int(m.group(2)) if m.group(2) else int(line.split()[4]))
    return np.array(gains), np.array(baselines)


def header_comments(hea: Path) -> dict[str, str]:
    return dict(line[1:].split(": ", 1) for line in hea.read_text().splitlines() if line.startswith("#"))


def demo_headers(tree: Path) -> list[Path]:
    return sorted((tree / "training").rglob("*.hea"), key=lambda p: p.relative_to(tree / "training").as_posix())


@pytest.fixture(scope="module")
def hr06000(fixtures) -> Path:
    return fixtures / "cinc2021" / "HR06000.hea"


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> Path:
    return cinc2020.demo(tmp_path_factory.mktemp("cinc2020_demo") / "raw", n_records=N_DEMO, seed=3)


@pytest.fixture(scope="module")
def store(demo_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cinc_stores") / "cinc2020_100hz.zarr"
    summary = cinc2020.convert(demo_tree, out, fs=100, max_quarantine_fraction=0.0, progress=False, max_seconds=60.0)
    assert summary["records"] == N_DEMO and summary["quarantined"] == 0
    return out


@pytest.fixture
def raw_copy(demo_tree, tmp_path) -> Path:
    """A copy of the demo tree to modify; its SHA256SUMS.txt would (rightly) refuse modified files."""
    raw = copy_tree(demo_tree, tmp_path / "raw")
    (raw / "SHA256SUMS.txt").unlink()
    return raw


# --------------------------------------------------------------------------------------------- reader
def test_source_is_registered():
    assert "cinc2020" in available() and "_challenge" not in available()
    assert get_source("cinc2020") is cinc2020


def test_real_record_equals_wfdb_and_loadmat(hr06000):
    rec = read_challenge_record(hr06000)
    assert rec.name == "HR06000" and rec.fs == 500.0
    assert rec.signal.dtype == np.float32 and rec.signal.shape == (12, 5000)
    np.testing.assert_array_equal(rec.signal, wfdb_canonical(hr06000.with_suffix("")))
    val = scipy.io.loadmat(str(hr06000.with_suffix(".mat")))["val"]
    assert val.dtype == np.int16 and val.shape == (12, 5000)
    gain, baseline = header_calibration(hr06000)
    assert gain.tolist() == [1000.0] * 12 and baseline.tolist() == [0] * 12
    expected = ((val.astype(np.float64) - baseline[:, None]) / gain[:, None]).astype(np.float32)
    np.testing.assert_array_equal(rec.signal, expected)           # header order is already canonical
    # the header says 'mv' (lower case): read as millivolts, QRS of the order of 1 mV
    assert "/mv " in hr06000.read_text()
    assert 0.3 < np.ptp(rec.signal[1]) < 5.0
    # header comments
    assert rec.age == 59.0 and rec.sex == "F"
    assert rec.dx == ["164934002", "426783006"]
    assert rec.comments["Rx"] == "Unknown" and rec.comments["Dx"] == "164934002,426783006"


def test_real_chapman_wfdb_record(fixtures):
    hea = fixtures / "chapman" / "WFDBRecords" / "01" / "010" / "JS00001.hea"
    rec = read_challenge_record(hea)
    np.testing.assert_array_equal(rec.signal, wfdb_canonical(hea.with_suffix("")))
    assert (rec.name, rec.fs, rec.age, rec.sex) == ("JS00001", 500.0, 85.0, "M")
    assert rec.dx == ["164889003", "59118001", "164934002"]


def test_fallback_parser_equals_wfdb_on_the_real_header(hr06000):
    a, b = read_challenge_record(hr06000), _read_fallback(hr06000)
    np.testing.assert_array_equal(a.signal, b.signal)
    assert (a.name, a.fs, a.age, a.sex, a.dx, a.comments) == (b.name, b.fs, b.age, b.sex, b.dx, b.comments)


@pytest.fixture
def hr_copy(hr06000, tmp_path) -> Path:
    for suffix in (".hea", ".mat"):
        shutil.copyfile(hr06000.with_suffix(suffix), tmp_path / f"HR06000{suffix}")
    return tmp_path / "HR06000.hea"


def _rewrite(hea: Path, first: str | None = None, signal_line=None) -> None:
    lines = hea.read_text().splitlines()
    if first is not None:
        lines[0] = first
    if signal_line is not None:
        lines[1:13] = [signal_line(line) for line in lines[1:13]]
    hea.write_text("\n".join(lines) + "\n")


def test_wfdb_rejected_header_read_by_fallback(hr_copy, hr06000):
    _rewrite(hr_copy, REJECTED_RECORD_LINE)
    with pytest.raises(Exception):
        wfdb.rdrecord(str(hr_copy.with_suffix("")))
    got, want = read_challenge_record(hr_copy), read_challenge_record(hr06000)
    np.testing.assert_array_equal(got.signal, want.signal)
    assert (got.name, got.fs, got.age, got.sex, got.dx, got.comments) == \
           (want.name, want.fs, want.age, want.sex, want.dx, want.comments)


def test_fallback_applies_baseline_and_microvolts(hr_copy, hr06000):
    """Rejected record line plus 'gain(baseline)/uV' fields: (digital - baseline) / gain in uV, as mV."""
    _rewrite(hr_copy, REJECTED_RECORD_LINE,
             lambda line: line.replace(" 1000/mv ", " 1.0(7)/uV "))
    assert " 1.0(7)/uV " in hr_copy.read_text()
    got = read_challenge_record(hr_copy).signal
    val = scipy.io.loadmat(str(hr06000.with_suffix(".mat")))["val"].astype(np.float64)
    np.testing.assert_allclose(got, (val - 7) * 1e-3, rtol=1e-6, atol=1e-9)


def _hea_11_leads(hea: Path) -> None:
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 12 ", " 11 ", 1)
    del lines[12]
    hea.write_text("\n".join(lines) + "\n")


def _mat_with_nan_marker(hea: Path) -> None:
    mat = hea.with_suffix(".mat")
    val = scipy.io.loadmat(str(mat))["val"]
    val[3, 100] = -32768
    scipy.io.savemat(str(mat), {"val": val}, format="4")
    update_checksums(hea, val.T)   # as a record written with the marker would have them


def _float_mat_with_nan(hea: Path) -> None:
    mat = hea.with_suffix(".mat")
    val = scipy.io.loadmat(str(mat))["val"].astype(np.float64)
    val[5, 10] = np.nan
    scipy.io.savemat(str(mat), {"val": val}, format="4")


def _resave_val(hea: Path, edit) -> None:
    mat = hea.with_suffix(".mat")
    scipy.io.savemat(str(mat), {"val": edit(scipy.io.loadmat(str(mat))["val"])}, format="4")


READER_DEFECTS = {
    "mat_wrong_shape": (lambda h: _resave_val(h, lambda v: v[:11]), r"wrong shape.*\(11, 5000\)"),
    "mat_fewer_samples": (lambda h: _resave_val(h, lambda v: v[:, :4000]),
                          r"sample count mismatch: .*declares 5000 samples, the data hold 4000"),
    "missing_mat": (lambda h: h.with_suffix(".mat").unlink(), r"missing \.mat"),
    "truncated_mat": (lambda h: h.with_suffix(".mat").write_bytes(h.with_suffix(".mat").read_bytes()[:60024]),
                      r"samples|unreadable|reshape|bytes"),
    "corrupt_mat": (lambda h: h.with_suffix(".mat").write_bytes(b"this is not a MATLAB file" * 3), r"unreadable"),
    "eleven_leads": (_hea_11_leads, r"12 standard leads.*found 11"),
    "unknown_lead_name": (lambda h: _rewrite(h, signal_line=lambda s: s.replace(" V6", " V7")), r"12 standard leads"),
    "unknown_units": (lambda h: _rewrite(h, signal_line=lambda s: s.replace("/mv", "/mmHg")),
                      r"unknown amplitude unit"),
    "nan_marker": (_mat_with_nan_marker, r"non-finite"),
    "float_nan": (_float_mat_with_nan, r"non-finite"),
    "sample_count": (lambda h: _rewrite(h, "HR06000 12 500 5001"), r"5001"),
}


@pytest.mark.parametrize("rejected_style", [False, True], ids=["wfdb", "fallback"])
@pytest.mark.parametrize("defect", sorted(READER_DEFECTS))
def test_reader_defects_raise_value_error(hr_copy, defect, rejected_style):
    damage, pattern = READER_DEFECTS[defect]
    damage(hr_copy)
    if rejected_style:
        first = hr_copy.read_text().splitlines()[0].split()[:4]
        _rewrite(hr_copy, " ".join(first) + " 15:11:55 04-Jun-2020")
    with pytest.raises(ValueError, match=pattern) as info:
        read_challenge_record(hr_copy)
    assert "HR06000" in str(info.value)


def test_double_mat_is_not_misread_as_int16(hr_copy, hr06000):
    """wfdb reads 16+24 files as raw int16 after 24 bytes; a double-valued 'val' must be read by loadmat."""
    _resave_val(hr_copy, lambda v: v.astype(np.float64))
    assert hr_copy.with_suffix(".mat").stat().st_size == 24 + 8 * 12 * 5000
    np.testing.assert_array_equal(read_challenge_record(hr_copy).signal, read_challenge_record(hr06000).signal)


def test_reader_age_nan_and_sex_spellings(hr_copy):
    text = hr_copy.read_text().replace("#Age: 59", "#Age: NaN").replace("#Sex: Female", "#Sex: M")
    hr_copy.write_text(text)
    rec = read_challenge_record(hr_copy)
    assert rec.age is None and rec.sex == "M"
    hr_copy.write_text(text.replace("#Age: NaN\n", "").replace("#Sex: M", "#Sex: Unknown"))
    rec = read_challenge_record(hr_copy)
    assert rec.age is None and rec.sex == "" and rec.dx == ["164934002", "426783006"]


# --------------------------------------------------------------------------------------------- demo tree
def test_demo_tree_layout_and_format(demo_tree, hr06000):
    training = demo_tree / "training"
    assert sorted(p.name for p in training.iterdir()) == sorted(SOURCE_DIRS)
    scored = pd.read_csv(demo_tree / "dx_mapping_scored.csv", dtype=str)
    unscored = pd.read_csv(demo_tree / "dx_mapping_unscored.csv", dtype=str)
    assert list(scored.columns[:3]) == ["Dx", "SNOMED CT Code", "Abbreviation"]
    assert list(scored.columns[3:]) == ["CPSC", "CPSC-Extra", "StPetersburg", "PTB", "PTB-XL", "Georgia", "Total",
                                        "Notes"]
    assert list(unscored.columns[:3]) == ["Dx", "SNOMED CT Code", "Abbreviation"]
    codes = set(scored["SNOMED CT Code"]) | set(unscored["SNOMED CT Code"])
    real_style = hr06000.read_text().splitlines()[1].split()
    headers = demo_headers(demo_tree)
    assert len(headers) == N_DEMO
    used = set()
    for source, fs in SOURCE_DIRS.items():
        records = sorted((training / source).rglob("*.hea"))
        assert records, source
        listed = (training / source / "RECORDS").read_text().split()
        assert listed == [p.relative_to(training / source).with_suffix("").as_posix() for p in records]
        for hea in records:
            assert hea.parent.name == "g1"
            rec = wfdb.rdrecord(str(hea.with_suffix("")))
            assert rec.fs == fs and rec.n_sig == 12 and rec.sig_name == list(LEADS)
            assert rec.fmt == ["16"] * 12 and rec.byte_offset == [24] * 12
            assert hea.with_suffix(".mat").stat().st_size == 24 + 2 * 12 * rec.sig_len
            val = scipy.io.loadmat(str(hea.with_suffix(".mat")))["val"]
            assert val.dtype == np.int16 and val.shape == (12, rec.sig_len)
            np.testing.assert_array_equal(np.round(rec.p_signal * 1000).astype(int), val.T)
            line = hea.read_text().splitlines()[1].split()
            assert [f.lower() for f in line[1:5]] == [f.lower() for f in real_style[1:5]] and line[8] == "I"
            assert int(line[5]) == int(val[0, 0])                      # initial value
            assert int(line[6]) == (int(val[0].astype(np.int64).sum()) + 32768) % 65536 - 32768  # checksum
            comments = header_comments(hea)
            assert list(comments)[:3] == ["Age", "Sex", "Dx"]
            assert comments["Sex"] in ("Male", "Female")
            dx = comments["Dx"].split(",")
            assert dx and set(dx) <= codes
            used.update(dx)
            assert np.isfinite(rec.p_signal).all() and rec.p_signal.std() > 0.01
    assert all(p.stem.startswith("HR") and len(p.stem) == 7 for p in (training / "ptb-xl").rglob("*.hea"))
    assert len(used) >= 5
    # INCART records are longer than the 60 s cap
    incart = next((training / "st_petersburg_incart").rglob("*.hea"))
    assert wfdb.rdheader(str(incart.with_suffix(""))).sig_len > 60 * 257
    # the tree carries its checksum manifest
    from physiossl.data.fetch import verify_sha256sums
    assert verify_sha256sums(demo_tree) == 2 * N_DEMO + 6 + 2


def test_demo_is_seeded(tmp_path):
    a = cinc2020.demo(tmp_path / "a", n_records=7, seed=5)
    b = cinc2020.demo(tmp_path / "b", n_records=7, seed=5)
    c = cinc2020.demo(tmp_path / "c", n_records=7, seed=6)
    rel = "training/georgia/g1/E00001"
    for suffix in (".mat", ".hea"):
        assert (a / f"{rel}{suffix}").read_bytes() == (b / f"{rel}{suffix}").read_bytes()
    assert (a / f"{rel}.mat").read_bytes() != (c / f"{rel}.mat").read_bytes()
    assert (a / "SHA256SUMS.txt").read_bytes() == (b / "SHA256SUMS.txt").read_bytes()


# --------------------------------------------------------------------------------------------- conversion
def test_store_signals_rates_and_lengths(store, demo_tree):
    root = open_store(store)
    assert root.attrs["fs"] == 100 and root.attrs["max_seconds"] == 60.0
    sig, lengths = root["signals"][:], root["lengths"][:]
    assert sig.shape == (N_DEMO, 12, 6000) and sig.dtype == np.float32
    meta = read_meta(root)
    headers = demo_headers(demo_tree)
    assert [str(x) for x in meta["record_id"]] == [h.stem for h in headers]
    checked_rates = set()
    for i, hea in enumerate(headers):
        rec = read_challenge_record(hea)
        native = SOURCE_DIRS[hea.parent.parent.name]
        assert rec.fs == native
        n = rec.signal.shape[1]
        expected_len = min(math.ceil(n * 100 / native), 6000)
        assert lengths[i] == expected_len, hea
        assert not sig[i, :, expected_len:].any()                      # zero padding
        if native not in checked_rates:                                # one record per native rate
            checked_rates.add(native)
            up, down = {500: (1, 5), 257: (100, 257), 1000: (1, 10)}[native]
            want = resample_poly(rec.signal.astype(np.float64), up, down, axis=1).astype(np.float32)
            np.testing.assert_array_equal(sig[i, :, :expected_len], want[:, :expected_len])
            if up == 1:                                                # anti-aliased, not plain subsampling
                plain = rec.signal[:, ::down][:, :expected_len]
                assert not np.allclose(sig[i, :, :expected_len], plain, atol=1e-3)
    assert checked_rates == {257, 500, 1000}
    incart = [i for i, h in enumerate(headers) if h.parent.parent.name == "st_petersburg_incart"]
    assert incart and all(lengths[i] == 6000 for i in incart)
    truncated = root.attrs["truncated"]
    assert set(truncated) == {headers[i].stem for i in incart} and all(v == 75.0 for v in truncated.values())
    assert root.attrs["provenance"]["n_truncated"] == len(incart)
    assert root.attrs["provenance"]["resampling"]["257"] == "resample_poly 257 Hz → 100 Hz"


def test_store_meta_labels_and_attrs(store, demo_tree):
    root = open_store(store)
    meta = read_meta(root)
    headers = demo_headers(demo_tree)
    scored = pd.read_csv(demo_tree / "dx_mapping_scored.csv", dtype=str)["SNOMED CT Code"].tolist()
    unscored = pd.read_csv(demo_tree / "dx_mapping_unscored.csv", dtype=str)["SNOMED CT Code"].tolist()
    hot_all, classes_all = read_labels(root, "all")
    hot_scored, classes_scored = read_labels(root, "scored")
    assert sorted(classes_all) == sorted(scored + unscored) and classes_all == sorted(classes_all, key=int)
    assert sorted(classes_scored) == sorted(scored)
    assert root.attrs["label_sets"] == {"all": classes_all, "scored": classes_scored}
    sources = [str(s) for s in meta["source"]]
    for i, hea in enumerate(headers):
        comments = header_comments(hea)
        dx = comments["Dx"].split(",")
        assert {classes_all[j] for j in np.nonzero(hot_all[i])[0]} == set(dx)
        assert {classes_scored[j] for j in np.nonzero(hot_scored[i])[0]} == set(dx) & set(scored)
        assert sources[i] == hea.parent.parent.name
        assert str(meta["patient_id"][i]) == hea.stem
        assert str(meta["sex"][i]) == comments["Sex"][0]
        if comments["Age"] == "NaN":
            assert np.isnan(meta["age"][i])
        else:
            assert meta["age"][i] == float(comments["Age"])
        digest = int(hashlib.sha256(hea.stem.encode()).hexdigest(), 16)
        assert meta["fold"][i] == 1 + digest % 10
    assert set(sources) == set(SOURCE_DIRS)
    assert hot_all.sum(axis=1).min() >= 1 and (hot_all.sum(axis=1) > 1).any()
    assert (hot_all.sum(axis=0) > 0).sum() >= 5
    # PTB-XL ids of the HR records, and nothing else
    hr = [h.stem for h in headers if h.parent.parent.name == "ptb-xl"]
    assert root.attrs["ptbxl_ids"] == {name: int(name[2:]) for name in hr} and hr
    # ... and as the store's cross-reference to PTB-XL's record ids (its ecg_id, as ptbxl.convert writes it)
    xref = [str(x) for x in root["xref/ptbxl"][:]]
    assert xref == [str(int(h.stem[2:])) if h.stem in hr else "" for h in headers]
    # provenance, class names, equivalences
    prov = root.attrs["provenance"]
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv", "SHA256SUMS.txt"):
        assert prov["files_sha256"][name] == hashlib.sha256((demo_tree / name).read_bytes()).hexdigest()
    assert prov["sources"] == {s: sources.count(s) for s in SOURCE_DIRS}
    assert root.attrs["snomed"]["426783006"] == "NSR" and root.attrs["snomed"]["164873001"] == "LVH"
    assert ["59118001", "713427006"] in root.attrs["scored_equivalents"]
    assert root.attrs["unknown_codes"] == []
    assert root.attrs["source_version"] == "1.0.2" and root.attrs["dataset"] == "cinc2020"
    norm = root.attrs["norm"]
    train = np.isin(meta["fold"], range(1, 9))
    lengths = root["lengths"][:]
    assert norm["n_samples"] == int(lengths[train].sum())
    assert read_quarantine(store) == {}


def test_leakage_guard_drops_held_out_ptbxl_records(store):
    """A pool that pretrains on this store drops the copies of PTB-XL's held-out records via xref/ptbxl."""
    from physiossl.data.ecg.loading import SignalCache

    root = open_store(store)
    ptbxl_ids = root.attrs["ptbxl_ids"]
    held_out = {str(v) for v in sorted(ptbxl_ids.values())[::2]}
    cache = SignalCache(store, folds=None, exclude={"ptbxl": held_out})
    assert cache.excluded == {str(store): len(held_out)}
    kept = {str(r) for r in cache.record_ids}
    assert len(kept) == N_DEMO - len(held_out)
    assert not {str(ptbxl_ids[r]) for r in kept if r in ptbxl_ids} & held_out


# --------------------------------------------------------------------------------------------- quarantine
def _first(tree: Path, source: str) -> Path:
    return sorted((tree / "training" / source).rglob("*.hea"))[0]


def _key(tree: Path, hea: Path) -> str:
    return hea.relative_to(tree).with_suffix("").as_posix()


def _dup_across_sources(tree: Path) -> tuple[str, Path]:
    src = _first(tree, "georgia")
    dst_dir = tree / "training" / "ptb" / "g1"
    for suffix in (".hea", ".mat"):
        shutil.copyfile(src.with_suffix(suffix), dst_dir / f"{src.stem}{suffix}")
    return _key(tree, dst_dir / src.name), src


def _unknown_code(hea: Path) -> None:
    hea.write_text(re.sub(r"#Dx: (.*)", r"#Dx: \1,999999999", hea.read_text()))


QUARANTINE_CASES = {
    "truncated_mat": ("cpsc_2018",
                      lambda h: h.with_suffix(".mat").write_bytes(h.with_suffix(".mat").read_bytes()[:5000]),
                      r"unreadable|samples|reshape"),
    "corrupt_mat": ("georgia", lambda h: h.with_suffix(".mat").write_bytes(os.urandom(777)), r"unreadable|reshape"),
    "missing_mat": ("ptb", lambda h: h.with_suffix(".mat").unlink(), r"missing \.mat"),
    "eleven_leads": ("ptb-xl", _hea_11_leads, r"12 standard leads"),
    "nan": ("cpsc_2018_extra", _mat_with_nan_marker, r"non-finite"),
    "unknown_code": ("georgia", _unknown_code, r"unknown label code: SNOMED code '999999999'"),
    "missing_header": ("cpsc_2018", lambda h: h.unlink(), r"without a \.hea"),
}


@pytest.mark.parametrize("case", sorted(QUARANTINE_CASES))
def test_quarantine_with_reason(raw_copy, tmp_path, case):
    source, damage, pattern = QUARANTINE_CASES[case]
    hea = _first(raw_copy, source)
    damage(hea)
    out = tmp_path / "q.zarr"
    summary = cinc2020.convert(raw_copy, out, fs=100, max_quarantine_fraction=1.0, progress=False)
    q = read_quarantine(out)
    assert list(q) == [_key(raw_copy, hea)]
    assert re.search(pattern, q[_key(raw_copy, hea)], re.IGNORECASE), q
    root = open_store(out)
    ids = [str(x) for x in read_meta(root)["record_id"]]
    assert hea.stem not in ids and len(ids) == N_DEMO - 1 == summary["records"]
    assert summary["quarantined"] == 1
    assert np.isfinite(root["signals"][:]).all()


def test_quarantine_duplicate_name_across_sources(raw_copy, tmp_path):
    key, original = _dup_across_sources(raw_copy)
    out = tmp_path / "dup.zarr"
    summary = cinc2020.convert(raw_copy, out, fs=100, max_quarantine_fraction=1.0, progress=False)
    q = read_quarantine(out)
    assert list(q) == [key] and "duplicate" in q[key] and _key(raw_copy, original) in q[key]
    meta = read_meta(open_store(out))
    ids = [str(x) for x in meta["record_id"]]
    assert ids.count(original.stem) == 1 and len(ids) == N_DEMO == summary["records"]
    assert str(meta["source"][ids.index(original.stem)]) == "georgia"


def test_unknown_code_kept_when_allowed(raw_copy, tmp_path):
    hea = _first(raw_copy, "georgia")
    _unknown_code(hea)
    out = tmp_path / "allow.zarr"
    summary = cinc2020.convert(raw_copy, out, fs=100, max_quarantine_fraction=0.0, progress=False,
                               allow_unknown_codes=True)
    assert summary["quarantined"] == 0
    root = open_store(out)
    hot, classes = read_labels(root, "all")
    assert classes[-1] == "999999999" and root.attrs["unknown_codes"] == ["999999999"]
    row = [str(x) for x in read_meta(root)["record_id"]].index(hea.stem)
    assert hot[row, -1] == 1 and hot[:, -1].sum() == 1
    assert "999999999" not in read_labels(root, "scored")[1]


def test_rejected_header_style_converts_like_the_original(raw_copy, store, tmp_path):
    hea = _first(raw_copy, "ptb-xl")
    lines = hea.read_text().splitlines()
    name, n_sig, fs, n = lines[0].split()[:4]
    lines[0] = f"{name} {n_sig} {fs} {n} 15:11:55 04-Jun-2020"
    hea.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception):
        wfdb.rdrecord(str(hea.with_suffix("")))
    out = tmp_path / "rej.zarr"
    cinc2020.convert(raw_copy, out, fs=100, max_quarantine_fraction=0.0, progress=False, max_seconds=60.0)
    np.testing.assert_array_equal(open_store(out)["signals"][:], open_store(store)["signals"][:])


def test_above_fraction_fails_and_leaves_no_store(raw_copy, tmp_path):
    hea = _first(raw_copy, "georgia")
    hea.with_suffix(".mat").unlink()
    quarantined = assert_fraction_failure(cinc2020.convert, raw_copy, tmp_path / "stores" / "cinc2020.zarr", 0.01)
    assert list(quarantined) == [_key(raw_copy, hea)]


def test_failed_conversion_keeps_previous_store(raw_copy, tmp_path):
    assert_failure_keeps_previous_store(
        cinc2020.convert, raw_copy, tmp_path / "keep.zarr",
        lambda: _first(raw_copy, "ptb").with_suffix(".mat").write_bytes(b"\0" * 10), n_records=N_DEMO)


@pytest.mark.parametrize("table", ["dx_mapping_scored.csv", "dx_mapping_unscored.csv"])
def test_missing_mapping_table(raw_copy, tmp_path, table):
    assert_missing_input_fails(cinc2020.convert, raw_copy, table, tmp_path / "none.zarr")


# --------------------------------------------------------------------------------------------- download, CLI
def test_download_fetches_archive_and_missing_tables(demo_tree, http_dir, tmp_path):
    root, base = http_dir
    top = "classification-of-12-lead-ecgs-the-physionetcomputing-in-cardiology-challenge-2020-1.0.2"
    files = {p.relative_to(demo_tree).as_posix(): p.read_bytes() for p in demo_tree.rglob("*") if p.is_file()}
    tables = {name: files.pop(name) for name in cinc2020.MAPPING_TABLES}
    files["SHA256SUMS.txt"] = "".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n" for rel, d in sorted(files.items())
                                      if rel != "SHA256SUMS.txt").encode()
    with zipfile.ZipFile(root / f"{top}.zip", "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{top}/{rel}", data)
    (root / "eval").mkdir()
    for name, data in tables.items():
        (root / "eval" / name).write_bytes(data)
    out = tmp_path / "data" / "cinc2020"
    got = cinc2020.download(out, url=f"{base}/{top}.zip", progress=False, mapping_url=f"{base}/eval")
    assert got == out and (out / "training" / "georgia").is_dir()
    for name, data in tables.items():
        assert (out / name).read_bytes() == data
    summary = cinc2020.convert(out, tmp_path / "dl.zarr", fs=100, max_quarantine_fraction=0.0, progress=False)
    assert summary["records"] == N_DEMO


def test_cli_demo_and_convert(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["demo", "cinc2020", "--out", str(raw), "--n-records", "8", "--seed", "2"]) == 0
    root = assert_cli_converts(capsys, "cinc2020", raw, tmp_path / "cli.zarr", 8)
    assert root.attrs["fs"] == 100
    assert root["signals"].shape == (8, 12, 1000)  # the default cap: 10 s


# --------------------------------------------------------------------------------------------- real header forms
#: One record per source, its header written as the releases write it. "2020": the original challenge files
#: (record line with date then time, ``16+24``, ``1000/mV``, ``#Age:``; Georgia names the record with its
#: ``.mat`` suffix and, before August 2020, a gain of 4880; PTB's sex in lower case); "1.0.2": the rewritten
#: headers of PhysioNet's challenge-2020 1.0.2 (no date, ``16x1+24``, ``1000.0(0)/mV``, lower-case ``mv`` for
#: PTB and PTB-XL, ``# Age:`` with a space, a Dx code repeated, no ``# Sx`` line for PTB and Georgia).
#: (source dir, record, fs, samples, record-line tail in the 2020 form, gain, 2020 sex, 1.0.2 unit)
REAL_FORMS = [
    ("cpsc_2018", "A0001", 500, 7500, "05-Feb-2020 11:39:16", 1000, "Male", "mV"),
    ("cpsc_2018_extra", "Q1083", 500, 25335, "05-Feb-2020 11:39:16", 1000, "Female", "mV"),
    ("st_petersburg_incart", "I0001", 257, 462600, "10-Jan-2020 11:39:16", 1000, "Male", "mV"),
    ("ptb", "S0316", 1000, 115200, "15-May-2020 15:22:05", 1000, "female", "mv"),
    ("ptb-xl", "HR00001", 500, 5000, "04-Jun-2020 15:11:55", 1000, "Female", "mv"),
    ("georgia", "E00001", 500, 5000, "05-May-2020 14:50:55", 4880, "Female", "mV"),
]


def write_real_form(directory: Path, source: str, name: str, fs: int, n: int, stamp: str, gain: int, sex: str,
                    unit: str, style: str, rng: np.random.Generator) -> np.ndarray:
    """Write ``name``.hea/.mat in the given header style; returns the digital (12, n) int16 values."""
    from physiossl.data.ecg import synth
    beat = synth.synthesize(synth.sample_spec(rng), rng)
    beat = resample_poly(beat, fs, synth.FS, axis=1) if fs != synth.FS else beat
    signal = np.tile(beat, (1, -(-n // beat.shape[1])))[:, :n]
    gain = gain if style == "2020" else 1000
    digital = np.clip(np.round(signal * gain), -32767, 32767).astype(np.int16)
    directory.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(directory / f"{name}.mat"), {"val": digital}, format="4")
    checksums = (digital.astype(np.int64).sum(axis=1) + 32768) % 65536 - 32768
    if style == "2020":
        lines = [f"{name}.mat 12 {fs} {n} {stamp}" if source == "georgia" else f"{name} 12 {fs} {n} {stamp}"]
        lines += [f"{name}.mat 16+24 {gain}/mV 16 0 {digital[k, 0]} {checksums[k]} 0 {lead}"
                  for k, lead in enumerate(LEADS)]
        age = "NaN" if source == "georgia" else "74"
        lines += [f"#Age: {age}", f"#Sex: {sex}", "#Dx: 426783006", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    else:
        lines = [f"{name} 12 {fs} {n}"]
        lines += [f"{name}.mat 16x1+24 1000.0(0)/{unit} 16 0 {digital[k, 0]} {checksums[k]} 0 {lead}"
                  for k, lead in enumerate(LEADS)]
        age = "NaN" if source == "georgia" else "59"
        lines += [f"# Age: {age}", "# Sex: Female", "# Dx: 426783006,164889003,164889003", "# Rx: Unknown",
                  "# Hx: Unknown"] + ([] if source in ("ptb", "georgia") else ["# Sx: Unknown"])
    (directory / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return digital


@pytest.mark.parametrize("style", ["2020", "1.0.2"])
def test_real_header_forms_of_all_six_sources_convert(style, tmp_path):
    """Every source's record is stored under its own name, none quarantined, with the values the header's gain
    gives, the rate of its header, and its age (NaN: unknown), sex and de-duplicated codes."""
    raw, rng, digital = tmp_path / "raw", np.random.default_rng(7), {}
    for source, name, fs, n, stamp, gain, sex, unit in REAL_FORMS:
        digital[name] = write_real_form(raw / "training" / source / "g1", source, name, fs, n, stamp, gain, sex,
                                        unit, style, rng)
    cinc2020._write_tables(raw, {})
    georgia = raw / "training" / "georgia" / "g1" / "E00001.hea"
    if style == "2020":
        with pytest.raises(Exception):
            wfdb.rdrecord(str(georgia.with_suffix("")))      # the form wfdb-python rejects (its issue 351)
    rec = read_challenge_record(georgia)
    gain = 4880 if style == "2020" else 1000
    assert rec.name == "E00001" and rec.fs == 500 and rec.age is None and rec.sex == "F"
    np.testing.assert_allclose(rec.signal, digital["E00001"] / gain, rtol=0, atol=1e-6)

    out = tmp_path / "cinc2020_500hz.zarr"
    summary = cinc2020.convert(raw, out, fs=500, max_quarantine_fraction=0.0, progress=False)
    assert summary["records"] == len(REAL_FORMS) and summary["quarantined"] == 0
    assert read_quarantine(out) == {}
    root = open_store(out)
    meta = read_meta(root)
    names = [name for _, name, *_ in REAL_FORMS]
    assert sorted(meta["record_id"]) == sorted(names)
    signals = root["signals"][:]
    labels, classes = read_labels(root, "all")
    for i, rid in enumerate(meta["record_id"]):
        source, name, fs, n, stamp, gain, sex, unit = REAL_FORMS[names.index(rid)]
        if fs == 500:   # stored as read: digital / gain, first 10 s
            g = gain if style == "2020" else 1000
            np.testing.assert_allclose(signals[i], digital[rid][:, :5000] / g, rtol=0, atol=1e-6)
        assert meta["source"][i] == source
        expected_age = None if source == "georgia" else (74 if style == "2020" else 59)
        assert (np.isnan(meta["age"][i]) if expected_age is None else meta["age"][i] == expected_age)
        codes = {c for c, on in zip(classes, labels[i]) if on}
        assert codes == ({"426783006"} if style == "2020" else {"426783006", "164889003"})
    assert root.attrs["truncated"] == {"I0001": 1800.0, "Q1083": 50.67, "S0316": 115.2, "A0001": 15.0}
