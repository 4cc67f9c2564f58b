"""Bootstrap intervals of the macro AUC: rank formula, pairwise counts, skipped classes, pairing and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from physiossl.eval.bootstrap import (
    bootstrap_class_aucs,
    bootstrap_ids,
    bootstrap_macro_aucs,
    class_aucs,
    macro_auc_ci,
    macro_auc_fast,
)
from physiossl.eval.metrics import macro_auc


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC by counting (positive, negative) pairs: 1 when the positive scores higher, 1/2 on a tie."""
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))


def random_task(n: int = 300, k: int = 6, seed: int = 0, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.2).astype(int)
    s = np.round(rng.random((n, k)) + 0.4 * y, decimals)  # rounding makes many ties
    return y, s


def test_bootstrap_ids_shape_range_and_determinism():
    ids = bootstrap_ids(50, 7, seed=3)
    assert ids.shape == (7, 50) and ids.dtype == np.int32
    assert ids.min() >= 0 and ids.max() < 50
    assert np.array_equal(ids, bootstrap_ids(50, 7, seed=3))
    assert not np.array_equal(ids, bootstrap_ids(50, 7, seed=4))
    assert len(np.unique(ids[0])) < 50  # drawn with replacement
    with pytest.raises(ValueError):
        bootstrap_ids(0, 5, seed=0)


def test_fast_macro_auc_agrees_with_torchmetrics_on_ties():
    y, s = random_task()
    y[:, 2] = 0  # no positives: left out by both
    y[:, 4] = 1  # no negatives: left out by both
    reference = macro_auc(y, s, [f"c{i}" for i in range(y.shape[1])])
    assert reference["n_scored"] == 4
    assert macro_auc_fast(y, s) == pytest.approx(reference["macro_auc"], abs=1e-6)
    per_class = class_aucs(y, s)
    assert np.isnan(per_class[[2, 4]]).all()
    for k, name in enumerate(["c0", "c1", "c3", "c5"]):
        assert per_class[[0, 1, 3, 5][k]] == pytest.approx(reference["per_class_auc"][name], abs=1e-6)


def test_resample_aucs_match_pairwise_counts_on_a_tiny_example():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0], [0, 1]])
    s = np.array([[0.9, 0.1], [0.3, 0.8], [0.3, 0.4], [0.5, 0.4], [0.1, 0.2]])
    ids = np.array([[0, 0, 1, 2, 3], [2, 2, 3, 4, 1], [4, 4, 4, 3, 3]])
    # resample 0, class 0: positives 0.9, 0.9, 0.3 and negatives 0.3, 0.5 give 2 + 2 + (1/2 + 0) of 6 pairs
    aucs = bootstrap_class_aucs(y, s, ids)
    assert aucs[0, 0] == pytest.approx(4.5 / 6)
    for b, row in enumerate(ids):
        expected = [pairwise_auc(y[row, k], s[row, k]) for k in range(2)]
        np.testing.assert_allclose(aucs[b], expected, rtol=0, atol=1e-12)
        assert bootstrap_macro_aucs(y, s, ids)[b] == pytest.approx(np.nanmean(expected))
    assert np.isnan(aucs[2, 0])  # resample 2 has no class-0 positive


def test_resample_aucs_match_the_rank_formula_on_each_resample():
    y, s = random_task(n=120, k=5, seed=1)
    ids = bootstrap_ids(len(y), 25, seed=2)
    per_resample = np.stack([class_aucs(y[row], s[row]) for row in ids])
    np.testing.assert_allclose(bootstrap_class_aucs(y, s, ids), per_resample, rtol=0, atol=1e-12)


def test_perfect_classifier_gives_one_one():
    y, _ = random_task(n=200, k=4, seed=5)
    ci = macro_auc_ci(y, y + 0.01 * np.arange(len(y))[:, None] / len(y), bootstrap_ids(len(y), 200, seed=0))
    assert ci["low"] == 1.0 and ci["high"] == 1.0 and ci["std"] == 0.0
    assert ci["n_bootstrap"] == ci["n_valid"] == 200 and ci["level"] == 0.95


def test_interval_contains_the_point_estimate():
    y, s = random_task(n=400, k=8, seed=7, decimals=3)
    ci = macro_auc_ci(y, s, bootstrap_ids(len(y), 500, seed=1), level=0.9)
    point = macro_auc_fast(y, s)
    assert ci["low"] < point < ci["high"]
    assert 0 < ci["std"] < ci["high"] - ci["low"]
    assert ci["level"] == 0.9 and ci["n_valid"] == 500


def test_identical_ids_give_identical_intervals():
    y, s = random_task(seed=3)
    first = macro_auc_ci(y, s, bootstrap_ids(len(y), 100, seed=11))
    assert macro_auc_ci(y, s, bootstrap_ids(len(y), 100, seed=11)) == first
    assert macro_auc_ci(y, s, bootstrap_ids(len(y), 100, seed=12)) != first


def test_a_class_without_positives_in_a_resample_is_skipped_there():
    y = np.array([[1, 1], [0, 0], [1, 0], [0, 0], [0, 0], [1, 0]])
    s = np.array([[0.8, 0.9], [0.2, 0.1], [0.6, 0.3], [0.7, 0.2], [0.1, 0.4], [0.9, 0.5]])
    with_class_1 = [0, 1, 2, 3, 4, 5]
    without_class_1 = [1, 2, 2, 3, 4, 5]  # record 0 is the only class-1 positive
    nothing_scorable = [1, 1, 3, 3, 4, 4]  # no positive of any class
    ids = np.array([with_class_1, without_class_1, nothing_scorable])
    aucs = bootstrap_class_aucs(y, s, ids)
    assert not np.isnan(aucs[0]).any()
    assert np.isnan(aucs[1, 1]) and np.isnan(aucs[2]).all()
    macro = bootstrap_macro_aucs(y, s, ids)
    assert macro[0] == pytest.approx((aucs[0, 0] + aucs[0, 1]) / 2)
    assert macro[1] == pytest.approx(pairwise_auc(y[without_class_1, 0], s[without_class_1, 0]))
    assert np.isnan(macro[2])
    ci = macro_auc_ci(y, s, ids)
    assert ci["n_bootstrap"] == 3 and ci["n_valid"] == 2
    assert min(macro[:2]) <= ci["low"] <= ci["high"] <= max(macro[:2])


def test_shape_errors():
    with pytest.raises(ValueError):
        macro_auc_fast(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        bootstrap_macro_aucs(np.zeros((5, 2)), np.zeros((5, 2)), np.array([[0, 5]]))


def test_a_thousand_resamples_of_a_ptbxl_sized_test_set_take_seconds():
    rng = np.random.default_rng(0)
    y = (rng.random((2200, 71)) < 0.05).astype(int)
    s = rng.random((2200, 71)).astype(np.float32) + 0.3 * y
    started = time.perf_counter()
    ci = macro_auc_ci(y, s, bootstrap_ids(2200, 1000, seed=0))
    assert time.perf_counter() - started < 30
    assert ci["n_valid"] == 1000 and ci["low"] < macro_auc_fast(y, s) < ci["high"]
