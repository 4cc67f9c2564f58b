"""The conversion routine every source runs (physiossl.data.convert.Conversion)."""

import csv

import pytest

from physiossl.data.convert import Conversion, ConversionError, UniqueIds
from physiossl.data.store import pending_quarantine, refused_quarantine_path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))[1:]


def _run(tmp_path, records, max_fraction, finish=lambda **kw: kw):
    """records: (id, outcome) with outcome "ok", an exception to raise, or "dup" (claims an id twice)."""
    out = tmp_path / "store.zarr"
    conversion = Conversion(tmp_path / "raw", out, len(records), max_fraction=max_fraction, desc="test",
                            ids="record id", progress=False)
    stored = []
    for rid, outcome in conversion.track(records):
        with conversion.record(rid):
            conversion.claim(rid, f"line {len(stored) + 1}")
            if isinstance(outcome, BaseException):
                raise outcome
            stored.append(rid)
    return conversion, stored, conversion.finish(finish, done=True)


def test_records_are_stored_or_quarantined_with_their_reason(tmp_path):
    records = [("a", "ok"), ("b", ValueError("flat lead V1")), ("c", OSError("truncated .dat")), ("a", "ok")]
    conversion, stored, finished = _run(tmp_path, records, max_fraction=0.9)
    assert stored == ["a"] and finished == {"done": True}
    assert conversion.entries[:2] == [("b", "flat lead V1"), ("c", "truncated .dat")]
    assert conversion.entries[2] == ("a", "duplicate record id a at line 2 (first at line 1)")
    assert conversion.summary(fs=100) == {"records": 1, "quarantined": 3, "fs": 100,
                                          "store": str(tmp_path / "store.zarr")}
    assert [r[0] for r in _rows(pending_quarantine(tmp_path / "store.zarr"))] == ["b", "c", "a"]


def test_other_errors_stop_the_conversion(tmp_path):
    with pytest.raises(KeyError):
        _run(tmp_path, [("a", KeyError("a bug, not a defect of the record"))], max_fraction=1.0)


def test_above_the_limit_the_store_is_refused_before_it_is_finished(tmp_path):
    finished = []
    with pytest.raises(ConversionError, match=r"2 of 3 records \(66.67%\) quarantined.*refused.quarantine.csv"):
        _run(tmp_path, [("a", "ok"), ("b", ValueError("x")), ("c", ValueError("y"))], max_fraction=0.5,
             finish=lambda **kw: finished.append(kw))
    assert finished == []
    assert [r[0] for r in _rows(refused_quarantine_path(tmp_path / "store.zarr"))] == ["b", "c"]


def test_unique_ids_name_both_places():
    ids = UniqueIds("ecg_id")
    ids.claim("7")
    with pytest.raises(ValueError, match=r"^duplicate ecg_id 7$"):
        ids.claim("7")
    ids.claim("8", "records/08.hea")
    with pytest.raises(ValueError, match=r"duplicate ecg_id 8 at other/08.hea \(first at records/08.hea\)"):
        ids.claim("8", "other/08.hea")
