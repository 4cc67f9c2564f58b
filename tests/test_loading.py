"""The training data path: SignalCache, crops, sliding windows, aggregation, DataLoader integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from physiossl.data.ecg.loading import (
    CropDataset,
    RandomCrops,
    SignalCache,
    WindowDataset,
    aggregate,
    collate_batch,
    crop_batch,
    window_starts,
)
from physiossl.data.ecg.store import EcgStoreWriter, open_store

VAR_LENGTHS = [1000, 400, 1000, 150, 730, 1000, 90, 999, 251, 250]


@pytest.fixture(scope="module")
def var_store(tmp_path_factory):
    """A small store whose records have different lengths (some shorter than a 250-sample crop)."""
    path = tmp_path_factory.mktemp("var") / "var.zarr"
    rng = np.random.default_rng(7)
    with EcgStoreWriter.open(path, capacity=len(VAR_LENGTHS), n_samples=1000, fs=100) as writer:
        for i, t in enumerate(VAR_LENGTHS):
            signal = (rng.normal(0.3, 2.0, (12, t)) + np.arange(12)[:, None]).astype(np.float32)
            writer.append(signal, {"record_id": f"r{i}", "patient_id": f"p{i}", "fold": i % 10 + 1, "age": 50.0,
                                   "sex": "F", "source": "test"},
                          labels={"all": ["A"] if i % 2 else ["B"]})
        writer.finish(dataset="var", source_version="0", label_sets={"all": ["A", "B"]}, provenance={},
                      norm_folds=range(1, 11))
    return path


def _raw(store, rows=None):
    root = open_store(store)
    sig = root["signals"][:]
    return sig if rows is None else sig[rows]


# --------------------------------------------------------------------------------------------- SignalCache
def test_ram_and_memmap_identical(demo_store, tmp_path):
    ram = SignalCache(demo_store, mode="ram")
    mm = SignalCache(demo_store, mode="memmap", cache_dir=tmp_path)
    assert isinstance(mm.data, np.memmap)
    assert ram.data.shape == mm.data.shape == (240, 12, 1000)
    np.testing.assert_array_equal(ram.data, np.asarray(mm.data))
    np.testing.assert_array_equal(ram.lengths, mm.lengths)
    np.testing.assert_array_equal(ram.record_ids, mm.record_ids)


def test_memmap_reuses_completed_cache(demo_store, tmp_path, monkeypatch):
    first = SignalCache(demo_store, folds=[1, 2, 3], mode="memmap", cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len([f for f in files if f.endswith(".f32")]) == 1 and any(f.endswith(".f32.ok") for f in files)
    expected = np.array(first.data)
    mtime = first._mm_path.stat().st_mtime_ns

    def no_fill(*args, **kwargs):
        raise AssertionError("a completed cache file must be reused, not refilled")

    monkeypatch.setattr(SignalCache, "_fill", no_fill)
    second = SignalCache(demo_store, folds=[1, 2, 3], mode="memmap", cache_dir=tmp_path)
    assert second._mm_path == first._mm_path
    assert second._mm_path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(second.data), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    # a different selection is a different cache file
    monkeypatch.undo()
    other = SignalCache(demo_store, folds=[4], mode="memmap", cache_dir=tmp_path)
    assert other._mm_path != first._mm_path


def test_invalid_mode(demo_store):
    with pytest.raises(ValueError, match="cache mode"):
        SignalCache(demo_store, mode="disk")


def test_fold_selection(demo_store):
    root = open_store(demo_store)
    fold = root["meta/fold"][:]
    ids = root["meta/record_id"][:]
    for folds in ([1], [9], [2, 5, 7], list(range(1, 9))):
        cache = SignalCache(demo_store, folds=folds, normalize=False)
        expected = np.flatnonzero(np.isin(fold, folds))
        assert len(cache) == len(expected) > 0
        np.testing.assert_array_equal(cache.index, expected)
        np.testing.assert_array_equal(cache.record_ids, ids[expected])
        assert set(fold[cache.index].tolist()) == set(folds)
        np.testing.assert_array_equal(cache.data, _raw(demo_store, expected))
        labels, classes = cache.labels("all")
        np.testing.assert_array_equal(labels, root["labels/all"][:][expected])
        assert classes == list(root["labels/all"].attrs["classes"])


def test_normalisation_uses_store_norm(demo_store):
    root = open_store(demo_store)
    norm = dict(root.attrs)["norm"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    cache = SignalCache(demo_store, folds=[3])
    row = 4
    raw = _raw(demo_store, [cache.index[row]])[0]
    length = cache.lengths[row]
    np.testing.assert_allclose(cache.data[row, :, :length], (raw[:, :length] - mean[:, None]) / std[:, None],
                               rtol=1e-5, atol=1e-5)


def test_normalisation_keeps_padding_zero(var_store):
    root = open_store(var_store)
    norm = dict(root.attrs)["norm"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    assert np.abs(mean).min() > 0.1  # otherwise a forgotten re-zeroing could not be seen
    cache = SignalCache(var_store)
    raw = _raw(var_store)
    np.testing.assert_array_equal(cache.lengths, VAR_LENGTHS)
    for row, length in enumerate(VAR_LENGTHS):
        np.testing.assert_allclose(cache.data[row, :, :length], (raw[row, :, :length] - mean[:, None]) / std[:, None],
                                   rtol=1e-5, atol=1e-5)
        assert not cache.data[row, :, length:].any()
    # without normalisation the cache is the raw store
    np.testing.assert_array_equal(SignalCache(var_store, normalize=False).data, raw)


# --------------------------------------------------------------------------------------------- crops
def _find(haystack: np.ndarray, needle: np.ndarray) -> list[int]:
    """Offsets at which ``needle`` (C, w) occurs as a contiguous slice of ``haystack`` (C, T)."""
    w = needle.shape[1]
    return [s for s in range(haystack.shape[1] - w + 1) if np.array_equal(haystack[:, s:s + w], needle)]


def test_crop_batch_contiguous_valid_slices(var_store):
    cache = SignalCache(var_store)
    crop = 250
    rows = np.repeat(np.arange(len(cache)), 5)
    out = crop_batch(cache.data, cache.lengths, rows, crop, generator=torch.Generator().manual_seed(0))
    assert out.shape == (len(rows), 12, crop) and out.dtype == torch.float32
    out = out.numpy()
    for crop_x, row in zip(out, rows):
        length = int(cache.lengths[row])
        valid = cache.data[row, :, :length]
        if length >= crop:
            assert _find(valid, crop_x), f"crop of record {row} is not a contiguous slice of its valid region"
        else:
            np.testing.assert_array_equal(crop_x[:, :length], valid)
            assert not crop_x[:, length:].any()


def test_crop_batch_starts_cover_valid_range():
    data = np.tile(np.arange(100, dtype=np.float32), (1, 2, 1))  # value == time index
    lengths = np.array([60])
    rows = np.zeros(2000, dtype=np.int64)
    out = crop_batch(data, lengths, rows, 10, generator=torch.Generator().manual_seed(1)).numpy()
    starts = out[:, 0, 0].astype(int)
    np.testing.assert_array_equal(out[:, 1, :], starts[:, None] + np.arange(10)[None, :])
    assert starts.min() == 0 and starts.max() == 50  # every start of the valid part, none beyond it


def test_crop_batch_longer_than_the_array():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 12, 100)).astype(np.float32)
    lengths = np.array([100, 60, 1])
    data[1, :, 60:] = data[2, :, 1:] = 0.0
    out = crop_batch(data, lengths, np.array([0, 1, 2, 0]), 150).numpy()
    assert out.shape == (4, 12, 150)
    for crop_x, row in zip(out, [0, 1, 2, 0]):
        np.testing.assert_array_equal(crop_x[:, :lengths[row]], data[row, :, :lengths[row]])
        assert not crop_x[:, lengths[row]:].any()


def test_crop_batch_generator_reproducible(demo_store):
    cache = SignalCache(demo_store, folds=[1])
    rows = np.arange(len(cache))
    a = crop_batch(cache.data, cache.lengths, rows, 250, generator=torch.Generator().manual_seed(3))
    b = crop_batch(cache.data, cache.lengths, rows, 250, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("length,window,stride,expected", [
    (1000, 250, 125, list(range(0, 751, 125))),
    (1000, 250, 250, [0, 250, 500, 750]),
    (1000, 300, 200, [0, 200, 400, 600, 700]),
    (999, 250, 125, [0, 125, 250, 375, 500, 625, 749]),
    (250, 250, 125, [0]),
    (100, 250, 125, [0]),
])
def test_window_starts(length, window, stride, expected):
    starts = window_starts(length, window, stride)
    assert starts.tolist() == expected
    if length > window:
        assert starts[-1] + window == length  # last window end-aligned
        assert np.all(np.diff(starts) <= stride) and np.all(np.diff(starts) > 0)


def test_window_dataset_yields_every_window(var_store):
    cache = SignalCache(var_store)
    window, stride = 250, 125
    ds = WindowDataset(cache, window, stride)
    expected = [(row, int(s)) for row, length in enumerate(cache.lengths)
                for s in window_starts(int(length), window, stride)]
    assert len(ds) == len(expected)
    loader = DataLoader(ds, batch_size=7, shuffle=False, collate_fn=collate_batch)
    xs, rows = zip(*loader)
    x, rows = torch.cat(xs).numpy(), torch.cat(rows).numpy()
    assert x.shape == (len(expected), 12, window)
    assert rows.tolist() == [r for r, _ in expected]
    for xi, (row, start) in zip(x, expected):
        ref = np.zeros((12, window), np.float32)
        seg = cache.data[row, :, start:start + window]
        ref[:, :seg.shape[1]] = seg
        np.testing.assert_array_equal(xi, ref)
    xi, ri = ds[3]
    assert xi.shape == (12, window) and int(ri) == expected[3][0]


# --------------------------------------------------------------------------------------------- aggregate
def test_aggregate_matches_numpy():
    rng = np.random.default_rng(0)
    n_records, k = 6, 4
    rows = rng.permutation(np.repeat(np.arange(n_records), rng.integers(1, 6, n_records)))
    values = rng.normal(size=(len(rows), k)).astype(np.float32)
    mean = aggregate(torch.from_numpy(values), torch.from_numpy(rows), n_records, "mean").numpy()
    mx = aggregate(torch.from_numpy(values), torch.from_numpy(rows), n_records, "max").numpy()
    for r in range(n_records):
        np.testing.assert_allclose(mean[r], values[rows == r].mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(mx[r], values[rows == r].max(axis=0))
    with pytest.raises(ValueError):
        aggregate(torch.from_numpy(values), torch.from_numpy(rows), n_records, "median")


# --------------------------------------------------------------------------------------------- datasets
def test_crop_dataset_with_labels(demo_store):
    cache = SignalCache(demo_store, folds=[2, 3])
    labels, _ = cache.labels("all")
    ds = CropDataset(cache, 250, labels)
    assert len(ds) == len(cache)
    idx = [5, 0, 17, 3]
    x, y = ds.__getitems__(idx)
    assert x.shape == (4, 12, 250) and y.shape == (4, labels.shape[1])
    np.testing.assert_array_equal(y.numpy(), labels[idx])
    for xi, i in zip(x.numpy(), idx):
        assert _find(cache.data[i], xi)
    xi, yi = ds[7]
    assert xi.shape == (12, 250)
    np.testing.assert_array_equal(yi.numpy(), labels[7])
    assert CropDataset(cache, 250)[0].shape == (12, 250)


def test_dataloader_collate_batch(demo_store):
    cache = SignalCache(demo_store, folds=[1, 2])
    loader = DataLoader(CropDataset(cache, 250), batch_size=16, shuffle=True, collate_fn=collate_batch)
    batches = list(loader)
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in batches)
    assert [b.shape[0] for b in batches[:-1]] == [16] * (len(batches) - 1)
    assert all(b.shape[1:] == (12, 250) for b in batches)
    assert sum(b.shape[0] for b in batches) == len(cache)

    labels, _ = cache.labels("all")
    x, y = next(iter(DataLoader(CropDataset(cache, 250, labels), batch_size=8, collate_fn=collate_batch)))
    assert x.shape == (8, 12, 250) and y.shape == (8, labels.shape[1])
    np.testing.assert_array_equal(y.numpy(), labels[:8])


def test_random_crops_are_drawn_by_the_sampler_whatever_the_workers(demo_store):
    """RandomCrops draws the order and each crop's position from its generator in the loading process: loaders
    with and without worker processes give the same batches, and a generator restored to a saved state draws
    the same epoch again."""
    cache = SignalCache(demo_store, folds=[1, 2])
    generator = torch.Generator().manual_seed(7)
    saved = generator.get_state()
    items = list(RandomCrops(len(cache), generator))
    assert sorted(row for row, _ in items) == list(range(len(cache)))
    assert all(0 <= position < 1 for _, position in items)

    dataset = CropDataset(cache, 250)
    row, position = items[0]
    start = int(position * (cache.lengths[row] - 250 + 1))
    np.testing.assert_array_equal(dataset[(row, position)].numpy(), cache.data[row][:, start:start + 250])

    def batches(workers: int) -> list[torch.Tensor]:
        generator.set_state(saved)
        return list(DataLoader(dataset, batch_size=16, sampler=RandomCrops(len(cache), generator),
                               collate_fn=collate_batch, num_workers=workers))

    alone, with_workers = batches(0), batches(2)
    assert len(alone) == len(with_workers) and all(torch.equal(a, b) for a, b in zip(alone, with_workers))
