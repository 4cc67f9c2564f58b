"""Sleep-staging metrics (hand-computed values, views, night bootstrap, paired differences) and the sleep-staging
report (tables, Δ columns, malformed files, hypnogram, confusion figure, atomic outputs) from fake result files."""

from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path

import matplotlib.figure
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from physiossl.data.sleep.stages import VIEWS, to_view
from physiossl.eval.sleep import (
    all_views,
    mean_night_bootstrap,
    night_bootstrap,
    paired_night_bootstrap,
    staging_metrics,
)
from physiossl.report.sleep import (
    OUTPUTS,
    SUMMARY_COLUMNS,
    TABLE_COLUMNS,
    hypnogram_figure,
    load_sleep_predictions,
    load_sleep_results,
    per_class_table,
    sleep_markdown,
    sleep_metrics,
    sleep_table,
    summary_table,
    write_sleep_report,
)

# hand example, 4-class view: confusion (rows true) [[1,1,0,0],[0,2,0,0],[0,0,1,0],[1,0,0,0]] over 6 scored epochs
TRUE = np.array([0, 0, 1, 1, 2, 3, -1])
PRED = np.array([0, 1, 1, 1, 2, 0, 2])


# ------------------------------------------------------------------------------------------------------ metrics

def test_staging_metrics_by_hand():
    m = staging_metrics(TRUE, PRED, 4)
    assert m["n_epochs"] == 6 and m["n_unscored"] == 1
    assert m["accuracy"] == pytest.approx(4 / 6)
    p_o, p_e = 4 / 6, (2 * 2 + 2 * 3 + 1 * 1 + 1 * 0) / 36           # row sums (2,2,1,1), column sums (2,3,1,0)
    assert m["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e)) and m["kappa"] == pytest.approx(13 / 25)
    f1 = {"wake": 2 * 1 / (2 * 1 + 1 + 1), "light": 2 * 2 / (2 * 2 + 1 + 0), "deep": 1.0, "REM": 0.0}
    assert m["per_class_f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert m["macro_f1_classes"] == ["wake", "light", "deep", "REM"]
    assert m["confusion"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert m["support"] == {"wake": 2, "light": 2, "deep": 1, "REM": 1}
    json.dumps(m)


def test_unscored_epochs_are_ignored():
    base = staging_metrics(TRUE[:-1], PRED[:-1], 4)
    for other in (0, 3, -1):
        pred = PRED.copy()
        pred[-1] = other
        m = staging_metrics(TRUE, pred, 4)
        assert {k: m[k] for k in base if k != "n_unscored"} == {k: base[k] for k in base if k != "n_unscored"}
    with pytest.raises(ValueError, match="outside"):
        staging_metrics(np.array([0, 1]), np.array([0, -1]), 4)          # a scored epoch needs a prediction
    empty = staging_metrics(np.array([-1, -1]), np.array([0, 1]), 4)
    assert empty["n_epochs"] == 0 and math.isnan(empty["accuracy"])


def test_absent_classes():
    # REM absent from both: F1 0.0 (torchmetrics, zero_division=0), left out of the macro average
    m = staging_metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)
    assert m["per_class_f1"]["REM"] == 0.0
    assert m["macro_f1_classes"] == ["wake", "light", "deep"]
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    # deep predicted but absent from the reference: F1 0.0, also not in the average
    m = staging_metrics(np.array([0, 0, 1, 3]), np.array([0, 2, 1, 3]), 4)
    assert m["per_class_f1"]["deep"] == 0.0 and "deep" not in m["macro_f1_classes"]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 1.0) / 3)


def test_views_4_to_3():
    views = all_views(TRUE, PRED, 4)
    assert list(views) == ["4", "3"]
    assert views["4"] == staging_metrics(TRUE, PRED, 4)
    three = views["3"]
    # wake, NREM (light + deep), REM: true (0,0,1,1,1,2), predicted (0,1,1,1,1,0)
    assert three["support"] == {"wake": 2, "NREM": 3, "REM": 1}
    assert three["confusion"] == [[1, 1, 0], [0, 3, 0], [1, 0, 0]]
    assert three["accuracy"] == pytest.approx(4 / 6)
    assert three["per_class_f1"] == pytest.approx({"wake": 0.5, "NREM": 6 / 7, "REM": 0.0})
    assert list(all_views(np.array([4, 0, -1]), np.array([4, 1, 2]), 5)) == ["5", "4", "3"]


def nights_data(n_nights: int = 12, per_night: int = 200, quality: float = 0.75, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n_nights * per_night)
    true[rng.random(len(true)) < 0.05] = -1
    pred = np.where(rng.random(len(true)) < quality, np.maximum(true, 0), rng.integers(0, 4, len(true)))
    nights = np.repeat([f"night{i:02d}" for i in range(n_nights)], per_night)
    return true, pred, nights


def test_night_bootstrap_point_interval_and_seed():
    true, pred, nights = nights_data()
    full = staging_metrics(true, pred, 4)
    start = time.perf_counter()
    ci = night_bootstrap(true, pred, nights, 4, n=1000, level=0.95, seed=3)
    assert time.perf_counter() - start < 1.0
    for metric in ("accuracy", "kappa", "macro_f1"):
        assert ci[metric]["value"] == pytest.approx(full[metric], abs=1e-6)
        assert ci[metric]["low"] <= ci[metric]["value"] <= ci[metric]["high"]
        assert ci[metric]["n_bootstrap"] == 1000 and ci[metric]["level"] == 0.95
    assert ci["n_nights"] == 12 and ci["unit"] == "night"
    assert night_bootstrap(true, pred, nights, 4, n=1000, level=0.95, seed=3) == ci
    assert night_bootstrap(true, pred, nights, 4, n=1000, level=0.95, seed=4)["kappa"]["low"] != ci["kappa"]["low"]
    json.dumps(ci)


def test_night_bootstrap_resamples_nights():
    true, pred, nights = nights_data(n_nights=1)
    ci = night_bootstrap(true, pred, nights, 4, n=50, level=0.9, seed=0)
    # a single night: every resample is the full set
    assert ci["kappa"]["low"] == pytest.approx(ci["kappa"]["high"]) == pytest.approx(ci["kappa"]["value"])
    true, pred, nights = nights_data(n_nights=3)
    true[nights == "night02"] = -1                                           # no scored epoch: left out
    assert night_bootstrap(true, pred, nights, 4, n=20, level=0.9, seed=0)["n_nights"] == 2


def test_paired_night_bootstrap():
    true, pred_a, nights = nights_data(quality=0.6, seed=1)
    same = paired_night_bootstrap(true, pred_a, pred_a.copy(), nights, 4, "kappa", n=500, level=0.95, seed=0)
    assert same["value"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    pred_b = np.where(np.random.default_rng(2).random(len(true)) < 0.5, np.maximum(true, 0), pred_a)
    for metric in ("accuracy", "kappa", "macro_f1"):
        d = paired_night_bootstrap(true, pred_a, pred_b, nights, 4, metric, n=500, level=0.95, seed=0)
        expected = staging_metrics(true, pred_b, 4)[metric] - staging_metrics(true, pred_a, 4)[metric]
        assert d["value"] == pytest.approx(expected, abs=1e-6)
        assert 0 < d["low"] <= d["high"]                                    # b is clearly better
        assert d == paired_night_bootstrap(true, pred_a, pred_b, nights, 4, metric, n=500, level=0.95, seed=0)
    with pytest.raises(ValueError, match="metric"):
        paired_night_bootstrap(true, pred_a, pred_b, nights, 4, "auc", n=10, level=0.95, seed=0)


def test_mean_night_bootstrap_over_runs():
    true, pred_a, nights = nights_data(quality=0.6, seed=1)
    runs = [np.where(np.random.default_rng(k).random(len(true)) < q, np.maximum(true, 0), pred_a)
            for k, q in ((5, 0.3), (6, 0.5), (7, 0.1))]
    out = mean_night_bootstrap(true, runs, nights, 4, n=300, level=0.9, seed=2)
    for metric in ("accuracy", "kappa", "macro_f1"):
        each = [staging_metrics(true, p, 4)[metric] for p in runs]
        assert out[metric]["per_run"] == pytest.approx(each, abs=1e-6)
        assert out[metric]["value"] == pytest.approx(np.mean(each), abs=1e-6)
        assert out[metric]["low"] <= out[metric]["value"] <= out[metric]["high"]
    assert out["n_runs"] == 3 and out["n_nights"] == 12
    # one run: the single-run bootstrap; the mean of identical runs: the same interval
    single = night_bootstrap(true, runs[0], nights, 4, n=300, level=0.9, seed=2)
    repeated = mean_night_bootstrap(true, [runs[0]] * 3, nights, 4, n=300, level=0.9, seed=2)
    assert repeated["kappa"]["low"] == pytest.approx(single["kappa"]["low"])
    assert repeated["kappa"]["high"] == pytest.approx(single["kappa"]["high"])
    # paired: run s against reference s; the same nights for every run, so swapping the pairs changes the value
    paired = mean_night_bootstrap(true, runs, nights, 4, [pred_a] * 3, n=300, level=0.9, seed=2)
    for k, p in enumerate(runs):
        direct = paired_night_bootstrap(true, pred_a, p, nights, 4, "kappa", n=300, level=0.9, seed=2)
        assert paired["kappa"]["per_run"][k] == pytest.approx(direct["value"], abs=1e-9)
    assert 0 < paired["kappa"]["low"] <= paired["kappa"]["value"] <= paired["kappa"]["high"]
    # the interval of the mean is narrower than the widest single-run interval
    widths = [paired_night_bootstrap(true, pred_a, p, nights, 4, "kappa", n=300, level=0.9, seed=2) for p in runs]
    assert paired["kappa"]["high"] - paired["kappa"]["low"] < max(w["high"] - w["low"] for w in widths)
    with pytest.raises(ValueError, match="references"):
        mean_night_bootstrap(true, runs, nights, 4, [pred_a], n=10)


# ------------------------------------------------------------------------------------------------------- report

N_NIGHTS, PER_NIGHT = 6, 240
QUALITY = {"supervised": 0.55, "sc": 0.62, "ssc": 0.66, "both": 0.72, "ccssl": 0.6}


def write_run(root: Path, variant: str, fraction: float, pool: str, seed: int = 0, quality: float | None = None,
              n_bootstrap: int = 200) -> Path:
    """A result file and its test predictions in the format of the sleep-staging training stage; the reference
    stages are the same for every run (seed 0), night05 has the most scored epochs."""
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, N_NIGHTS * PER_NIGHT).astype(np.int8)
    nights = np.repeat([f"night{i:02d}" for i in range(N_NIGHTS)], PER_NIGHT)
    index = np.tile(np.arange(PER_NIGHT, dtype=np.int32), N_NIGHTS)
    unscored = rng.random(len(true)) < np.where(nights == "night05", 0.0, 0.1)
    true[unscored] = -1
    run_rng = np.random.default_rng(zlib.crc32(f"{variant}/{fraction}/{pool}{f'/{seed}' if seed else ''}".encode()))
    q = QUALITY[variant] + 0.1 * fraction if quality is None else quality
    pred = np.where(run_rng.random(len(true)) < q, np.maximum(true, 0), run_rng.integers(0, 4, len(true)))
    pred = pred.astype(np.int8)
    probs = np.full((len(true), 4), 0.1, np.float32)
    probs[np.arange(len(true)), pred] = 0.7
    name = f"{variant}_{fraction:g}_{pool}_{seed}"
    path = root / "sleep" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    order = run_rng.permutation(len(true))                                  # file order differs between runs
    np.savez_compressed(path.with_suffix(".npz"), night=nights[order], index=index[order], true=true[order],
                        pred=pred[order], probs=probs[order])
    test = all_views(true, pred, 4)
    for view, entry in test.items():
        t, p = to_view(true, int(view), 4), to_view(pred, int(view), 4)
        entry["ci"] = night_bootstrap(t, p, nights, int(view), n=n_bootstrap, level=0.95, seed=0)
    summary = {"variant": variant, "fraction": fraction, "pool": pool, "model": "sleepformer", "n_classes": 4,
               "test": test, "val": all_views(true[:500], pred[:500], 4), "best_epoch": 7,
               "nights": {"labeled": int(40 * fraction), "unlabeled": 0 if pool == "none" else 80, "val": 4,
                          "test": N_NIGHTS},
               "epochs": {"labeled": int(40000 * fraction), "unlabeled": 0 if pool == "none" else 80000},
               "seed": seed}
    path.write_text(json.dumps(summary, indent=2))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("sleep_runs")
    grid = [("ccssl", 0.25, "in"), ("both", 0.25, "ood"), ("both", 0.25, "in"), ("supervised", 0.25, "none"),
            ("ssc", 0.25, "in"), ("sc", 0.25, "in"), ("supervised", 1.0, "none"), ("both", 1.0, "in")]
    return [write_run(root, *key) for key in grid]


def test_load_and_table_order(runs):
    df = load_sleep_results(runs)
    assert list(zip(df.variant, df.fraction, df.pool)) == [
        ("supervised", 0.25, "none"), ("sc", 0.25, "in"), ("ssc", 0.25, "in"), ("both", 0.25, "in"),
        ("both", 0.25, "ood"), ("ccssl", 0.25, "in"), ("supervised", 1.0, "none"), ("both", 1.0, "in")]
    table = sleep_table(df)
    assert list(table.columns) == TABLE_COLUMNS
    assert table.variant_label.iloc[:6].tolist() == [
        "supervised only", "+ sequential consistency", "+ semi-supervised contrastive", "+ both", "+ both",
        "CCSSL (FixMatch + class-aware contrastive)"]
    assert table.pool_label.iloc[:6].tolist() == ["—", "in-distribution", "in-distribution", "in-distribution",
                                                  "+ out-of-distribution", "in-distribution"]
    summary = json.loads(Path(runs[3]).read_text())
    sup = table.iloc[0]
    assert sup.kappa_4 == summary["test"]["4"]["kappa"] and sup.macro_f1_3 == summary["test"]["3"]["macro_f1"]
    assert sup.kappa_4_low == summary["test"]["4"]["ci"]["kappa"]["low"]
    assert math.isnan(sup.delta_kappa_4) and math.isnan(sup.delta_macro_f1_4_low)


def test_delta_columns(runs):
    df = load_sleep_results(runs)
    table = sleep_table(df)
    for i, r in table.iterrows():
        if r.variant == "supervised":
            continue
        ref = table[(table.variant == "supervised") & (table.fraction == r.fraction)].iloc[0]
        assert r.reference == df.source[ref.name]
        assert r.delta_kappa_4 == pytest.approx(r.kappa_4 - ref.kappa_4)
        assert r.delta_macro_f1_4 == pytest.approx(r.macro_f1_4 - ref.macro_f1_4)
        a, b = (load_sleep_predictions(Path(df.predictions[j])) for j in (ref.name, i))
        oa, ob = np.lexsort((a["index"], a["night"])), np.lexsort((b["index"], b["night"]))
        direct = paired_night_bootstrap(a["true"][oa], a["pred"][oa], b["pred"][ob], a["night"][oa], 4, "macro_f1",
                                        200, 0.95, 0)
        assert (r.delta_macro_f1_4_low, r.delta_macro_f1_4_high) == pytest.approx((direct["low"], direct["high"]))
        assert direct["value"] == pytest.approx(r.delta_macro_f1_4, abs=1e-6)
    both = table[(table.variant == "both") & (table.fraction == 0.25) & (table.pool == "in")].iloc[0]
    assert both.delta_kappa_4_low > 0                                      # 0.72 vs 0.55 correct: clearly better


def test_delta_without_predictions(runs, tmp_path):
    copies = []
    for path in runs[:4]:                                                  # ccssl, both (ood, in), supervised
        target = tmp_path / Path(path).name
        target.write_text(Path(path).read_text())
        if "supervised" not in target.name:
            target.with_suffix(".npz").write_bytes(Path(path).with_suffix(".npz").read_bytes())
        copies.append(target)
    table = sleep_table(load_sleep_results(copies))
    others = table[table.variant != "supervised"]
    assert others.delta_kappa_4.notna().all() and others.delta_kappa_4_low.isna().all()


def test_per_class_markdown_and_metrics(runs):
    df = load_sleep_results(runs)
    per_class = per_class_table(df)
    assert len(per_class) == len(df)
    summary = json.loads(Path(df.source[0]).read_text())["test"]["4"]
    assert [per_class.iloc[0][f"f1_{n}"] for n in VIEWS[4]] == [summary["per_class_f1"][n] for n in VIEWS[4]]
    table = sleep_table(df)
    summary = summary_table(df, table)
    text = sleep_markdown(summary, table, per_class)
    assert "| supervised only | 25% | — |" in text and "CCSSL (FixMatch + class-aware contrastive)" in text
    assert "+ out-of-distribution" in text and "whole test nights" in text and "Per-class F1" in text
    assert "seed" not in text                                               # one seed per configuration
    scores = sleep_metrics(table)
    assert sleep_metrics(summary)["both/0.25/in"]["kappa_4"] == scores["both/0.25/in"]["kappa_4"]
    assert set(scores["both/0.25/in"]) >= {"acc_4", "kappa_4", "macro_f1_4", "kappa_3", "delta_macro_f1_4"}
    assert scores["supervised/1/none"]["delta_kappa_4"] is None
    json.dumps(scores)


def test_malformed_and_duplicate_files_are_named(runs, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_sleep_results([runs[0], broken])
    summary = json.loads(Path(runs[0]).read_text())
    for change, message in ((lambda s: s.pop("test"), "test"), (lambda s: s.update(variant="mixup"), "variant"),
                            (lambda s: s["test"]["4"].update(kappa="high"), "kappa"),
                            (lambda s: s["test"].pop("3"), "view")):
        bad = json.loads(json.dumps(summary))
        change(bad)
        path = tmp_path / f"bad_{message}.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=f"bad_{message}.json.*{message}"):
            load_sleep_results([path])
    twin = tmp_path / "twin.json"
    twin.write_text(Path(runs[0]).read_text())
    with pytest.raises(ValueError, match=f"{Path(runs[0]).name} and .*twin.json"):
        load_sleep_results([runs[0], twin])
    bad_npz = tmp_path / "bad.npz"
    np.savez(bad_npz, night=np.array(["a"]), index=np.array([0]))
    with pytest.raises(ValueError, match="bad.npz"):
        load_sleep_predictions(bad_npz)


def test_hypnogram(runs, tmp_path):
    npz = {"supervised only": Path(runs[3]).with_suffix(".npz"), "+ both": Path(runs[2]).with_suffix(".npz")}
    out = tmp_path / "hyp.png"
    assert hypnogram_figure(npz, out) == "night05"                         # the night with the most scored epochs
    assert out.stat().st_size > 0
    image = matplotlib.image.imread(out)
    assert image.shape[1] == 1200 and image.shape[0] > 300                 # 10 in wide at 120 dpi, three rows
    assert hypnogram_figure(npz, out, night="night01") == "night01"
    with pytest.raises(ValueError, match="night99"):
        hypnogram_figure(npz, out, night="night99")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyp.png"]


def test_write_sleep_report_is_atomic(runs, tmp_path, monkeypatch):
    out_dir = tmp_path / "report"
    paths, summary = write_sleep_report(runs, out_dir)
    assert set(paths) == set(OUTPUTS) and all(p.stat().st_size > 0 for p in paths.values())
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUTS)    # no temporary files left
    assert len(pd.read_csv(paths["sleep.csv"])) == len(pd.read_csv(paths["sleep_runs.csv"])) == len(runs)
    assert list(pd.read_csv(paths["sleep.csv"]).columns) == SUMMARY_COLUMNS
    assert len(pd.read_csv(paths["sleep_per_class.csv"])) == len(runs)
    assert matplotlib.image.imread(paths["sleep_confusion.png"]).shape[1] > 0
    before = {name: p.read_bytes() for name, p in paths.items()}

    def failing_savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_sleep_report(runs[:3], out_dir)
    assert paths["hypnogram.png"].read_bytes() == before["hypnogram.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUTS)


def test_report_without_hypnogram_runs(runs, tmp_path):
    only = [p for p in runs if "ssc" in Path(p).name or "sc_" in Path(p).name]
    paths, _ = write_sleep_report(only, tmp_path / "r", hypnogram_variants=("supervised", "both"))
    assert paths["hypnogram.png"].stat().st_size > 0
    empty, _ = write_sleep_report([], tmp_path / "empty")
    assert "No sleep-staging results" in empty["sleep.md"].read_text()
    assert list(pd.read_csv(empty["sleep.csv"]).columns) == SUMMARY_COLUMNS
    assert list(pd.read_csv(empty["sleep_runs.csv"]).columns) == TABLE_COLUMNS


def test_summary_over_seeds(tmp_path):
    qualities = {("supervised", 0): 0.50, ("supervised", 1): 0.60, ("supervised", 2): 0.55,
                 ("both", 0): 0.60, ("both", 1): 0.45, ("both", 2): 0.70}
    paths = [write_run(tmp_path, v, 0.25, "none" if v == "supervised" else "in", seed=s, quality=q)
             for (v, s), q in qualities.items()]
    paths.append(write_run(tmp_path, "sc", 0.25, "in", seed=0, quality=0.6))  # one seed only
    df = load_sleep_results(paths)
    table = sleep_table(df)
    summary = summary_table(df, table)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(zip(summary.variant, summary.n_seeds)) == [("supervised", 3), ("sc", 1), ("both", 3)]
    both, sup, sc = (summary[summary.variant == v].iloc[0] for v in ("both", "supervised", "sc"))
    runs = table[table.variant == "both"]
    assert both.seeds == "0 1 2"
    assert both.kappa_4 == pytest.approx(runs.kappa_4.mean())
    assert both.kappa_4_sd == pytest.approx(runs.kappa_4.std())
    # Δ: each seed against the supervised run of the same seed, then averaged
    assert both.delta_kappa_4 == pytest.approx(both.kappa_4 - sup.kappa_4)
    assert both.delta_kappa_4 == pytest.approx(runs.delta_kappa_4.mean())
    assert both.delta_kappa_4_nonnegative == int((runs.delta_kappa_4 >= 0).sum()) == 2
    assert both.delta_kappa_4_low <= both.delta_kappa_4 <= both.delta_kappa_4_high
    assert both.kappa_4_low <= both.kappa_4 <= both.kappa_4_high and both.kappa_3_low <= both.kappa_3_high
    # the interval equals the mean bootstrap of the aligned predictions
    data = [load_sleep_predictions(Path(p)) for p in df.predictions[runs.index]]
    order = [np.lexsort((d["index"], d["night"])) for d in data]
    direct = mean_night_bootstrap(data[0]["true"][order[0]], [d["pred"][o] for d, o in zip(data, order)],
                                  data[0]["night"][order[0]], 4, n=200, level=0.95, seed=0)
    assert (both.kappa_4_low, both.kappa_4_high) == pytest.approx((direct["kappa"]["low"], direct["kappa"]["high"]))
    # one seed: the run's own values and intervals
    single = table[table.variant == "sc"].iloc[0]
    assert (sc.kappa_4, sc.kappa_4_low, sc.delta_kappa_4_high) == (single.kappa_4, single.kappa_4_low,
                                                                   single.delta_kappa_4_high)
    assert math.isnan(sc.kappa_4_sd)
    text = sleep_markdown(summary, table, per_class_table(df))
    assert "Runs of every seed" in text and "2 of 3" in text and "means over the seeds" in text
    metrics = sleep_metrics(summary)
    assert set(metrics) == {"supervised/0.25/none", "sc/0.25/in", "both/0.25/in"}
    assert metrics["both/0.25/in"]["n_seeds"] == 3
    written, _ = write_sleep_report(paths, tmp_path / "report")          # figures over seeds
    assert len(pd.read_csv(written["sleep.csv"])) == 3 and len(pd.read_csv(written["sleep_runs.csv"])) == 7
    assert matplotlib.image.imread(written["sleep_confusion.png"]).shape[1] == int(120 * (0.6 + 3.2 * 3))
    # a missing prediction file: means and Δ kept, intervals of the seed mean dropped
    Path(df.predictions[runs.index[1]]).unlink()
    partial = summary_table(load_sleep_results(paths)).set_index("variant")
    assert partial.loc["both", "kappa_4"] == pytest.approx(both.kappa_4)
    assert math.isnan(partial.loc["both", "kappa_4_low"]) and math.isnan(partial.loc["both", "delta_kappa_4_low"])
    assert not math.isnan(partial.loc["supervised", "kappa_4_low"])
