"""The ECG store contract: atomic writing, validation on open, sharding, atomic replacement of files."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from physiossl.cli import main
from physiossl.data.convert import settle_quarantine
from physiossl.data.ecg import LEADS
from physiossl.data.ecg.store import ECG_SCHEMA, EcgStoreWriter, open_store, read_labels, read_meta
from physiossl.data.files import replace_path, write_manifest
from physiossl.data.store import StoreError, quarantine_path, write_quarantine

LABEL_SETS = {"rhythm": ["AFIB", "SR"], "form": ["LVOLT", "PVC", "QWAVE"]}


def _finish(writer: EcgStoreWriter) -> None:
    writer.finish(dataset="toy", source_version="0", label_sets=LABEL_SETS,
                  provenance={"raw_dir": "nowhere"}, norm_folds=[1, 2])


def _signals(n: int, t: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.3, (12, t)).astype(np.float32) for _ in range(n)]


def write_small_store(path: Path, n_samples: int = 50) -> list[np.ndarray]:
    sigs = _signals(3, n_samples)
    sigs[1] = sigs[1][:, : n_samples - 20]  # a shorter record
    with EcgStoreWriter.open(path, capacity=3, n_samples=n_samples, fs=100) as w:
        for i, s in enumerate(sigs):
            w.append(s, meta={"record_id": f"r{i}", "patient_id": f"p{i // 2}", "fold": i + 1, "age": 40.0 + i,
                              "sex": "MF"[i % 2], "source": "toy"},
                     labels={"rhythm": ["SR"] if i != 2 else ["AFIB"], "form": ["PVC", "UNKNOWN"] if i == 0 else []},
                     targets={"hr": 60.0 + i}, norm=i < 2)
        _finish(w)
    return sigs


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in Path(directory).iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture
def small_store(tmp_path) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path / "stores" / "toy.zarr"
    return path, write_small_store(path)


# --------------------------------------------------------------------------------------------- open_store
def test_open_store_rejects_non_store(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "signals.npy").write_bytes(b"\0" * 8)
    with pytest.raises(StoreError, match="zarr.json"):
        open_store(tmp_path / "plain")
    with pytest.raises(StoreError, match="zarr.json"):
        open_store(tmp_path / "does_not_exist")


def test_open_store_accepts_valid(small_store):
    path, _ = small_store
    root = open_store(path)
    assert root.attrs["schema"] == ECG_SCHEMA
    assert root.attrs["n_records"] == 3


def _shard(path: Path) -> Path:
    shards = sorted((path / "signals").rglob("c/*/*/*"))
    assert shards, sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))
    return shards[0]


def test_open_store_names_a_missing_or_truncated_file(small_store):
    path, _ = small_store
    (path / ".snakemake_timestamp").write_text("")  # a file the manifest does not list is no problem
    open_store(path)
    shard = _shard(path)
    name = shard.relative_to(path).as_posix()
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError,
                       match=rf"{re.escape(name)} has {len(data) // 2:,} bytes, the manifest {len(data):,}"):
        open_store(path)
    shard.unlink()
    with pytest.raises(StoreError, match=rf"{re.escape(str(path))}: {re.escape(name)} is missing") as info:
        open_store(path)
    assert "rerun its conversion" in str(info.value)
    (path / "physiossl_manifest.json").unlink()
    with pytest.raises(StoreError, match="physiossl_manifest.json is missing"):
        open_store(path)


def test_verify_store_checks_the_content_of_every_file(small_store, capsys):
    path, _ = small_store
    assert main(["verify-store", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["verified"][str(path)] > 3
    shard = _shard(path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hashes see it
    shard.write_bytes(bytes(data))
    open_store(path)
    assert main(["verify-store", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{shard.relative_to(path).as_posix()} differs from the manifest (SHA-256)" in err and str(path) in err


def test_the_store_keeps_its_quarantine_list_and_verify_store_pairs_them(tmp_path, capsys):
    path = tmp_path / "stores" / "toy.zarr"
    published = quarantine_path(path)
    settle_quarantine(tmp_path, path, [("r9", "truncated .dat")], 10, 0.5)  # as a conversion does before finishing
    assert not published.exists()     # published only once the store is in place
    write_small_store(path)
    assert main(["verify-store", str(path)]) == 0
    assert (path / "quarantine.csv").read_bytes() == published.read_bytes()
    assert "r9,truncated .dat" in published.read_text() and leftovers(path.parent) == []
    published.write_text("record,reason\nsomething,from another run\n")  # a list left by another conversion
    assert main(["verify-store", str(path)]) == 1
    assert f"{published} is not the quarantine list of {path}" in capsys.readouterr().err


def test_a_new_write_removes_what_killed_writers_of_this_host_left(tmp_path):
    import socket
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid belongs to no process now, as a writer's killed with kill -9
    path = tmp_path / "stores" / "toy.zarr"
    path.parent.mkdir(parents=True)
    host = socket.gethostname()
    left = [path.parent / f".toy.zarr.tmp-{host}-{dead.pid}", path.parent / f".toy.zarr.tmp-{dead.pid}",
            path.parent / f".toy.zarr.old-{host}-{dead.pid}"]
    for folder in left:
        (folder / "signals").mkdir(parents=True)
    elsewhere = path.parent / f".toy.zarr.tmp-another-node-{dead.pid}"  # a process this host cannot check
    elsewhere.mkdir()
    other_output = path.parent / f".other.zarr.tmp-{host}-{dead.pid}"
    other_output.mkdir()
    write_small_store(path)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, elsewhere.name, other_output.name]), list(path.parent.iterdir())


def _relabel(attrs):
    sets = dict(attrs["label_sets"])
    sets["rhythm"] = ["AFIB", "SR", "SBRAD"]
    attrs["label_sets"] = sets


@pytest.mark.parametrize("edit, problem", [
    (lambda a: a.__delitem__("norm"), "norm"),
    (lambda a: a.__setitem__("leads", list(reversed(LEADS))), "leads"),
    (lambda a: a.__setitem__("schema", "physiossl.ecg/0"), "schema"),
    (lambda a: a.__setitem__("n_records", 4), "signals"),
    (_relabel, "labels/rhythm"),
], ids=["no-norm", "lead-order", "schema", "n_records", "label-classes"])
def test_open_store_rejects_edited_attrs(small_store, edit, problem):
    path, _ = small_store
    open_store(path)  # valid before the edit
    edit(zarr.open_group(str(path), mode="r+").attrs)
    write_manifest(path)  # as if the store had been written so: the contract check, not the files check, refuses it
    with pytest.raises(StoreError, match=problem) as info:
        open_store(path)
    assert str(path) in str(info.value)


def test_open_store_rejects_missing_meta_array(small_store):
    path, _ = small_store
    shutil.rmtree(path / "meta" / "fold")
    with pytest.raises(StoreError, match="meta/fold"):
        open_store(path)


# --------------------------------------------------------------------------------------------- writer
def test_writer_roundtrip_and_padding(small_store):
    path, sigs = small_store
    root = open_store(path)
    stored = root["signals"][:]
    assert stored.shape == (3, 12, 50) and stored.dtype == np.float32
    assert root["lengths"][:].tolist() == [50, 30, 50]
    np.testing.assert_array_equal(stored[0], sigs[0])
    np.testing.assert_array_equal(stored[2], sigs[2])
    np.testing.assert_array_equal(stored[1, :, :30], sigs[1])
    assert not stored[1, :, 30:].any(), "shorter record is not zero-padded"
    meta = read_meta(root)
    assert [str(x) for x in meta["record_id"]] == ["r0", "r1", "r2"]
    assert [str(x) for x in meta["sex"]] == ["M", "F", "M"]
    assert meta["fold"].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(meta["age"], [40.0, 41.0, 42.0])
    hot, classes = read_labels(root, "rhythm")
    assert classes == ["AFIB", "SR"] and hot.tolist() == [[0, 1], [0, 1], [1, 0]]
    hot, classes = read_labels(root, "form")
    assert hot.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]  # unknown codes are dropped
    with pytest.raises(StoreError, match="no label set"):
        read_labels(root, "diagnostic")
    np.testing.assert_array_equal(root["targets/hr"][:], [60.0, 61.0, 62.0])
    # normalisation statistics come from the norm=True records only, over their real samples
    x = np.concatenate([sigs[0], sigs[1]], axis=1).astype(np.float64)
    np.testing.assert_allclose(root.attrs["norm"]["mean"], x.mean(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(root.attrs["norm"]["std"], x.std(axis=1), rtol=1e-6)
    assert root.attrs["norm"]["n_samples"] == 80
    assert leftovers(path.parent) == []


def test_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "stores" / "toy.zarr"
    with pytest.raises(KeyError, match="boom"):
        with EcgStoreWriter.open(path, capacity=2, n_samples=20, fs=100) as w:
            w.append(_signals(1, 20)[0], meta={"record_id": "a"})
            raise KeyError("boom")
    assert not path.exists()
    assert leftovers(path.parent) == []


def test_writer_without_finish_raises_and_leaves_nothing(tmp_path):
    path = tmp_path / "stores" / "toy.zarr"
    with pytest.raises(RuntimeError, match="finish"):
        with EcgStoreWriter.open(path, capacity=2, n_samples=20, fs=100) as w:
            w.append(_signals(1, 20)[0], meta={"record_id": "a"})
    assert not path.exists()
    assert leftovers(path.parent) == []


def test_writer_failure_keeps_previous_store(small_store):
    path, sigs = small_store
    with pytest.raises(RuntimeError):
        with EcgStoreWriter.open(path, capacity=1, n_samples=10, fs=100) as w:
            w.append(_signals(1, 10)[0], meta={"record_id": "x"})
            raise RuntimeError("interrupted")
    root = open_store(path)
    np.testing.assert_array_equal(root["signals"][0], sigs[0])
    assert leftovers(path.parent) == []


def test_writer_replaces_previous_store(small_store):
    path, _ = small_store
    new = _signals(2, 10, seed=9)
    with EcgStoreWriter.open(path, capacity=2, n_samples=10, fs=100) as w:
        for i, s in enumerate(new):
            w.append(s, meta={"record_id": f"n{i}", "fold": 1})
        _finish(w)
    root = open_store(path)
    assert root["signals"].shape == (2, 12, 10)
    np.testing.assert_array_equal(root["signals"][1], new[1])
    assert leftovers(path.parent) == []


def test_writer_rejects_bad_shapes_and_empty_stores(tmp_path):
    with pytest.raises(StoreError, match="does not fit"):
        with EcgStoreWriter.open(tmp_path / "a.zarr", capacity=1, n_samples=10, fs=100) as w:
            w.append(np.zeros((12, 11), np.float32), meta={"record_id": "long"})
    with pytest.raises(StoreError, match="does not fit"):
        with EcgStoreWriter.open(tmp_path / "b.zarr", capacity=1, n_samples=10, fs=100) as w:
            w.append(np.zeros((11, 10), np.float32), meta={"record_id": "leads"})
    with pytest.raises(StoreError, match="no record"):
        with EcgStoreWriter.open(tmp_path / "c.zarr", capacity=1, n_samples=10, fs=100) as w:
            _finish(w)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- sharding
def test_demo_store_has_few_files(demo_store):
    root = open_store(demo_store)
    assert root.attrs["n_records"] == 240
    n_files = sum(len(files) for _, _, files in os.walk(demo_store))
    assert n_files < 100, f"{n_files} files for 240 records: signals are not sharded"
    signal_files = sum(len(files) for _, _, files in os.walk(demo_store / "signals"))
    assert signal_files <= 3  # zarr.json + one shard
    assert root["signals"].shards is not None


# --------------------------------------------------------------------------------------------- atomic files
def test_write_quarantine_replaces_existing_file(tmp_path):
    store = tmp_path / "toy.zarr"
    path = quarantine_path(store)
    assert path == tmp_path / "toy.zarr.quarantine.csv"
    path.write_text("record,reason\nold,stale entry\n")
    write_quarantine(path, [("7", "truncated .dat"), ("9", "bad, \"quoted\" header")])
    text = path.read_text()
    assert "old" not in text and "stale" not in text
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["record", "reason"], ["7", "truncated .dat"], ["9", "bad, \"quoted\" header"]]
    write_quarantine(path, [])
    assert path.read_text().strip() == "record,reason"
    assert leftovers(tmp_path) == []


def test_replace_path_file_and_directory(tmp_path):
    final = tmp_path / "out" / "result.txt"
    tmp = tmp_path / "new.txt"
    tmp.write_text("first")
    replace_path(tmp, final)  # parent created
    assert final.read_text() == "first" and not tmp.exists()
    tmp.write_text("second")
    replace_path(tmp, final)
    assert final.read_text() == "second" and not tmp.exists()
    assert leftovers(final.parent) == []

    final_dir = tmp_path / "out" / "tree"
    final_dir.mkdir()
    (final_dir / "old.bin").write_bytes(b"old")
    new_dir = tmp_path / "staging"
    new_dir.mkdir()
    (new_dir / "new.bin").write_bytes(b"new")
    replace_path(new_dir, final_dir)
    assert sorted(p.name for p in final_dir.iterdir()) == ["new.bin"]
    assert not new_dir.exists()
    assert leftovers(final_dir.parent) == []
