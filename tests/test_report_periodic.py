"""Report stage, periodic-target experiment: tables, Markdown, figures and metrics from fake result files and
their test predictions; zero-shot regions; label efficiency; malformed files; no periodic outputs without results."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from physiossl.report.periodic import load_periodic, load_predictions, periodic_table
from physiossl.report.tables import display_name
from physiossl.stages import report

VIEW = {"name": "fake", "experiment": {"methods": ["simclr", "random"], "protocols": ["linear"]},
        "periodic": {"target": "heart_rate", "units": "bpm", "units_per_hz": 60, "band": [30, 200],
                     "methods": ["simper", "simclr", "random"], "protocols": ["linear", "finetune", "fft", "zero_shot"],
                     "zero_shot": {"hold_out": [80, 100], "train_max": 120}}}
CLASSIFICATION_OUTPUTS = ["table.csv", "table.md", "figure.png", "label_efficiency.csv", "label_efficiency.png",
                          "robustness.csv", "robustness.png", "metrics.json"]
PERIODIC_OUTPUTS = ["periodic.csv", "periodic.md", "periodic.png"]
EFFICIENCY_OUTPUTS = ["periodic_label_efficiency.csv", "periodic_label_efficiency.png"]
HOLD_OUT, TRAIN_MAX = [80.0, 100.0], 120.0
N_TEST = 150
FULL_TRAIN = 1600
# (method, protocol): prediction noise (bpm); one seed each
GRID = {("simper", "linear"): 3.0, ("simper", "finetune"): 2.5, ("simper", "fft"): 4.0, ("simper", "zero_shot"): 6.0,
        ("simclr", "linear"): 5.0, ("simclr", "fft"): 9.0, ("simclr", "zero_shot"): 7.0,
        ("random", "linear"): 12.0, ("random", "finetune"): 3.5, ("random", "fft"): 15.0}
FRACTIONS = {("simper", "linear"): {"frac0.1": 6.0, "folds2": 4.5}, ("random", "linear"): {"frac0.1": 14.0}}


def metrics_of(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    return {"mae": float(np.abs(p - t).mean()), "rmse": float(np.sqrt(((p - t) ** 2).mean())),
            "pearson_r": float(np.corrcoef(t, p)[0, 1]), "n": int(ok.sum()), "n_missing": int((~ok).sum())}


def interval(mae: float) -> dict:
    return {"low": mae - 0.4, "high": mae + 0.5, "level": 0.95, "n_bootstrap": 500, "n_valid": 500, "std": 0.2}


def periodic_result(root: Path, method: str, protocol: str, noise: float, seed: int, subset: str = "all",
                    no_extrapolation: bool = False) -> Path:
    """A result file and its predictions in the layout and format of the periodic stage."""
    rng = np.random.default_rng(seed)
    y_true = rng.uniform(45.0, 118.0 if no_extrapolation else 140.0, N_TEST)
    y_pred = y_true + rng.normal(0.0, noise, N_TEST)
    if protocol == "fft":
        y_pred[:3] = np.nan  # no peak in the band
    region = np.full(N_TEST, "", dtype="U13")
    zero_shot = {}
    if protocol == "zero_shot":
        region[:] = "seen"
        region[(y_true >= HOLD_OUT[0]) & (y_true <= HOLD_OUT[1])] = "interpolation"
        region[y_true > TRAIN_MAX] = "extrapolation"
        for name in ("seen", "interpolation", "extrapolation"):
            rows = region == name
            zero_shot[name] = ({**metrics_of(y_true[rows], y_pred[rows]),
                                "mae_ci": interval(metrics_of(y_true[rows], y_pred[rows])["mae"])}
                               if rows.any() else {"n": 0})
    kind = "all" if subset == "all" else "fraction" if subset.startswith("frac") else "folds"
    value = None if kind == "all" else float(subset[4:]) if kind == "fraction" else int(subset[5:])
    n_train = FULL_TRAIN if kind == "all" else int(FULL_TRAIN * value) if kind == "fraction" else 200 * value
    test = metrics_of(y_true, y_pred)
    path = root / "periodic" / method / protocol / f"{subset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), y_true=y_true, y_pred=y_pred,
                        bootstrap_ids=rng.integers(0, N_TEST, (20, N_TEST)),
                        record_id=np.array([f"r{i}" for i in range(N_TEST)]), region=region)
    summary = {
        "method": method, "protocol": protocol, "target": "heart_rate", "units": "bpm", "dataset": "ptbxl",
        "subset": {"name": subset, "kind": kind, "value": value, "n_train_records": n_train}, "seed": 0,
        "folds": {"train": [1, 2, 3, 4, 5, 6, 7, 8], "val": 9, "test": 10},
        "n_records": {"train": n_train, "val": N_TEST, "test": N_TEST},
        "n_without_target": {"train": 4, "val": 0, "test": 2},
        "test_mae": test["mae"], "test_ci": interval(test["mae"]), "test": test,
        "val": {**test, "mae": test["mae"] + 0.1}, "zero_shot": zero_shot,
        **({"zero_shot_split": {"hold_out": HOLD_OUT, "train_max": TRAIN_MAX}} if protocol == "zero_shot" else {}),
        "predictions": path.with_suffix(".npz").name, "best_epoch": None if protocol == "fft" else 9,
        "history": [], "config": {}, "encoder": "xresnet1d50", "init": "random" if method == "random" else "ckpt",
        **({"series": "first principal component", "series_fs_hz": 3.125, "band_searched_hz": [0.5, 1.5625]}
           if protocol == "fft" else {}),
    }
    path.write_text(json.dumps(summary))  # NaN allowed, as the stage writes it
    return path


def periodic_grid(root: Path, fractions: bool = True) -> list[Path]:
    paths = []
    for seed, ((method, protocol), noise) in enumerate(GRID.items()):
        paths.append(periodic_result(root, method, protocol, noise, seed,
                                     no_extrapolation=(method, protocol) == ("simclr", "zero_shot")))
        for subset, sub_noise in (FRACTIONS.get((method, protocol), {}) if fractions else {}).items():
            paths.append(periodic_result(root, method, protocol, sub_noise, 100 + seed, subset))
    return paths


def classification_results(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for method, auc in (("simclr", 0.85), ("random", 0.7)):
        r = {"method": method, "protocol": "linear", "test_macro_auc": auc, "val_macro_auc": auc, "best_epoch": 5,
             "subset": {"name": "all", "kind": "all", "value": None, "n_train_records": FULL_TRAIN},
             "test": {"n_scored": 20, "excluded": {}}, "n_records": {"train": FULL_TRAIN, "val": 200, "test": 200},
             "label_set": "all", "aggregate": "mean", "encoder": "xresnet1d50",
             "test_ci": {"low": auc - 0.02, "high": auc + 0.01, "level": 0.95, "n_bootstrap": 100}}
        paths.append(root / f"{method}.json")
        paths[-1].write_text(json.dumps(r))
    return paths


def result_of(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_png(path: Path, min_bytes: int = 5000) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    return image.shape[:2]


def cell(mae: float, low: float, high: float) -> str:
    return f"{mae:.2f} [{low:.2f}, {high:.2f}]"


def test_display_names_of_the_periodic_protocols():
    assert display_name("random", "linear", "xresnet1d50") == "random init, linear probe"
    assert display_name("random", "finetune", "xresnet1d50") == "supervised xresnet1d50"
    assert display_name("random", "fft", "xresnet1d50") == "random init, FFT readout"
    assert display_name("random_xresnet1d101", "zero_shot") == "random init, zero-shot linear probe"
    assert display_name("simper", "fft") == "SimPer" and display_name("simclr", "zero_shot") == "SimCLR"


def test_periodic_report(tmp_path):
    paths = periodic_grid(tmp_path / "results")
    out = tmp_path / "report"
    counts = report.run(VIEW, classification_results(tmp_path / "eval"), out, periodic=paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSIFICATION_OUTPUTS + PERIODIC_OUTPUTS
                                                           + EFFICIENCY_OUTPUTS)
    # label efficiency: 3 subset runs, plus the full-set linear rows once per kind (fraction: 3 methods, folds: 3)
    assert counts == {"results": 2, "table": 2, "label_efficiency": 0, "robustness": 0, "periodic": 13,
                      "periodic_table": 10, "periodic_label_efficiency": 9, "out_dir": str(out)}

    table = pd.read_csv(out / "periodic.csv")
    assert list(table[["method", "protocol"]].itertuples(index=False, name=None)) == [
        ("simclr", "linear"), ("simper", "linear"), ("random", "linear"), ("simper", "finetune"),
        ("random", "finetune"), ("simclr", "fft"), ("simper", "fft"), ("random", "fft"),
        ("simclr", "zero_shot"), ("simper", "zero_shot")]
    rows = table.set_index(["method", "protocol"])
    data = result_of(tmp_path / "results/periodic/simper/linear/all.json")
    row = rows.loc[("simper", "linear")]
    assert row.display == "SimPer" and row.target == "heart_rate" and row.units == "bpm"
    assert row.test_mae == pytest.approx(data["test_mae"]) and row.test_mae == pytest.approx(2.4, abs=0.6)
    assert row.ci_low == pytest.approx(data["test_mae"] - 0.4) and row.ci_high == pytest.approx(data["test_mae"] + 0.5)
    assert row.rmse == pytest.approx(data["test"]["rmse"]) and row.pearson_r == pytest.approx(data["test"]["pearson_r"])
    assert row.n_test_records == N_TEST and row.n_missing == 0 and row.n_test_without_target == 2
    assert row.best_epoch == 9 and row.ci_level == 0.95 and row.n_bootstrap == 500
    assert math.isnan(row.seen_mae) and math.isnan(row.extrapolation_n) and math.isnan(row.train_max)
    fft = rows.loc[("random", "fft")]
    assert fft.display == "random init, FFT readout" and fft.n_test_records == N_TEST - 3 and fft.n_missing == 3
    assert math.isnan(fft.best_epoch)
    displays = dict(zip(zip(table.method, table.protocol), table.display))
    assert displays[("random", "linear")] == "random init, linear probe"
    assert displays[("random", "finetune")] == "supervised xresnet1d50"

    zs = result_of(tmp_path / "results/periodic/simper/zero_shot/all.json")["zero_shot"]
    row = rows.loc[("simper", "zero_shot")]
    for region in ("seen", "interpolation", "extrapolation"):
        assert getattr(row, f"{region}_mae") == pytest.approx(zs[region]["mae"])
        assert getattr(row, f"{region}_ci_low") == pytest.approx(zs[region]["mae"] - 0.4)
        assert getattr(row, f"{region}_ci_high") == pytest.approx(zs[region]["mae"] + 0.5)
        assert getattr(row, f"{region}_n") == zs[region]["n"] > 0
    assert sum(zs[region]["n"] for region in zs) == N_TEST
    assert (row.hold_out_low, row.hold_out_high, row.train_max) == (80, 100, 120)
    empty = rows.loc[("simclr", "zero_shot")]
    assert empty.extrapolation_n == 0 and math.isnan(empty.extrapolation_mae) and empty.seen_n > 0

    md = (out / "periodic.md").read_text()
    assert md.startswith("# fake: heart rate regression")
    assert "95% percentile bootstrap interval over 500 resamples" in md
    assert "2 test record(s) without a heart rate are left out" in md
    mae = data["test_mae"]
    assert (f"| simper | linear | {cell(mae, mae - 0.4, mae + 0.5)} | SimPer | {data['test']['rmse']:.2f} | "
            f"{data['test']['pearson_r']:.3f} | {N_TEST} | {mae + 0.1:.2f} | 9 |") in md
    assert re.search(r"\| random \| fft \| [\d.]+ \[[\d.]+, [\d.]+\] \| random init, FFT readout \| .* \| "
                     rf"{N_TEST - 3} \(3 unscored\) \| [\d.]+ \| n/a \|", md)
    assert "## Zero-shot" in md and "at most 120 bpm outside the held-out range [80, 100] bpm" in md
    seen = zs["seen"]
    assert f"| simper | SimPer | {cell(seen['mae'], seen['mae'] - 0.4, seen['mae'] + 0.5)} (n={seen['n']}) |" in md
    assert re.search(r"\| simclr \| SimCLR \| .* \| .* \| no test records \|", md)
    assert "## Label efficiency" in md and "| method | protocol | name | 10% | 2 folds | all |" in md
    frac = result_of(tmp_path / "results/periodic/random/linear/frac0.1.json")["test_mae"]
    full = result_of(tmp_path / "results/periodic/random/linear/all.json")["test_mae"]
    assert (f"| random | linear | random init, linear probe | {cell(frac, frac - 0.4, frac + 0.5)} | n/a | "
            f"{cell(full, full - 0.4, full + 0.5)} |") in md
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == (1 + 10) + (1 + 2) + (1 + 3)

    eff = pd.read_csv(out / "periodic_label_efficiency.csv")
    assert list(eff.columns) == ["method", "display", "protocol", "subset", "kind", "value", "n_train_records",
                                 "train_fraction", "test_mae", "ci_low", "ci_high"]
    simper = eff[eff.method == "simper"]
    assert list(zip(simper.kind, simper.value)) == [("folds", 2), ("folds", 8), ("fraction", 0.1), ("fraction", 1.0)]
    assert list(simper.train_fraction) == pytest.approx([0.25, 1.0, 0.1, 1.0])
    assert set(eff.protocol) == {"linear"}

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["simclr/linear"] == {"test_macro_auc": 0.85, "ci_low": 0.83, "ci_high": 0.86}
    assert set(metrics) == {"simclr/linear", "random/linear", "periodic"}
    assert set(metrics["periodic"]) == {f"{m}/{p}" for m, p in GRID}
    assert metrics["periodic"]["simper/linear"] == pytest.approx(
        {"test_mae": mae, "ci_low": mae - 0.4, "ci_high": mae + 0.5, "rmse": data["test"]["rmse"],
         "pearson_r": data["test"]["pearson_r"]}, abs=1e-6)
    assert metrics["periodic"]["simper/zero_shot"]["interpolation_mae"] == pytest.approx(zs["interpolation"]["mae"],
                                                                                          abs=1e-6)
    assert metrics["periodic"]["simclr/zero_shot"]["extrapolation_mae"] is None

    height, width = assert_png(out / "periodic.png", min_bytes=30000)
    assert height > width  # 4 protocol rows, 3 method columns
    assert_png(out / "periodic_label_efficiency.png", min_bytes=10000)

    # without periodic results: none of the periodic outputs, and none left over from the earlier report
    counts = report.run(VIEW, classification_results(tmp_path / "eval"), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSIFICATION_OUTPUTS)
    assert "periodic" not in counts and "periodic" not in json.loads((out / "metrics.json").read_text())


def test_periodic_report_without_label_efficiency_runs(tmp_path):
    paths = [periodic_result(tmp_path, "simper", "linear", 3.0, 0), periodic_result(tmp_path, "random", "fft", 9.0, 1)]
    out = tmp_path / "report"
    counts = report.run(VIEW, classification_results(tmp_path / "eval"), out, periodic=paths)
    assert counts["periodic_table"] == 2 and counts["periodic_label_efficiency"] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSIFICATION_OUTPUTS + PERIODIC_OUTPUTS)
    md = (out / "periodic.md").read_text()
    assert "## Zero-shot" not in md and "## Label efficiency" not in md
    assert_png(out / "periodic.png", min_bytes=10000)


def test_loader_orders_rows_and_resolves_predictions(tmp_path):
    paths = periodic_grid(tmp_path, fractions=False)
    df = load_periodic(paths)
    assert len(df) == len(GRID) and set(df.subset) == {"all"}
    row = df[(df.method == "simper") & (df.protocol == "zero_shot")].iloc[0]
    assert row.predictions == str(tmp_path / "periodic/simper/zero_shot/all.npz")
    arrays = load_predictions(Path(row.predictions), int(row.n_test_records + row.n_missing), regions=True)
    assert len(arrays["y_true"]) == N_TEST and set(arrays["region"]) == {"seen", "interpolation", "extrapolation"}
    assert list(periodic_table(df).columns[:3]) == ["method", "display", "protocol"]


BREAKAGES = [
    lambda r: r.pop("test_mae"),
    lambda r: r.pop("test_ci"),
    lambda r: r["test_ci"].pop("low"),
    lambda r: r["test"].pop("n"),
    lambda r: r.update(test_mae="low"),
    lambda r: r.update(protocol="bogus"),
    lambda r: r.update(units=None),
    lambda r: r.update(best_epoch=1.5),
    lambda r: r["subset"].update(kind="fraction", value=0.1),
    lambda r: r.update(predictions="../elsewhere.npz"),
    lambda r: r["zero_shot"].pop("interpolation"),
    lambda r: r["zero_shot"]["seen"].pop("mae_ci"),
    lambda r: r["zero_shot_split"].update(hold_out=[80]),
    lambda r: r.pop("zero_shot_split"),
]


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_malformed_periodic_result_names_the_file(tmp_path, breakage):
    good = periodic_result(tmp_path, "simper", "linear", 3.0, 0)
    bad = periodic_result(tmp_path, "simclr", "zero_shot", 3.0, 1)
    data = result_of(bad)
    breakage(data)
    bad.write_text(json.dumps(data))
    out = tmp_path / "report"
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        report.run(VIEW, classification_results(tmp_path / "eval"), out, periodic=[good, bad])
    assert not out.exists()  # nothing written


def test_unreadable_duplicate_and_mixed_periodic_results_name_the_files(tmp_path):
    eval_paths = classification_results(tmp_path / "eval")
    first = periodic_result(tmp_path / "a", "simper", "linear", 3.0, 0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        report.run(VIEW, eval_paths, tmp_path / "report", periodic=[first, bad])
    second = periodic_result(tmp_path / "b", "simper", "linear", 4.0, 1)
    with pytest.raises(ValueError, match=rf"{re.escape(str(first))} and {re.escape(str(second))}"):
        report.run(VIEW, eval_paths, tmp_path / "report", periodic=[first, second])
    other = periodic_result(tmp_path / "c", "simclr", "linear", 4.0, 2)
    other.write_text(json.dumps({**result_of(other), "target": "respiratory_rate"}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(first))} and {re.escape(str(other))}.*different target"):
        report.run(VIEW, eval_paths, tmp_path / "report", periodic=[first, other])


def test_missing_or_stale_predictions_name_the_npz(tmp_path):
    eval_paths = classification_results(tmp_path / "eval")
    path = periodic_result(tmp_path, "simper", "linear", 3.0, 0)
    npz = path.with_suffix(".npz")
    np.savez_compressed(npz, y_true=np.zeros(N_TEST - 1), y_pred=np.zeros(N_TEST - 1))
    with pytest.raises(ValueError, match=re.escape(str(npz)) + r".*150 test records"):
        report.run(VIEW, eval_paths, tmp_path / "report", periodic=[path])
    npz.unlink()
    with pytest.raises(ValueError, match=re.escape(str(npz))):
        report.run(VIEW, eval_paths, tmp_path / "report", periodic=[path])
