"""Tables and figures of the periodic-target experiment (SimPer's protocols, e.g. heart-rate regression) from its
result files and the test predictions saved next to them (``.npz``): the main table (test MAE with its bootstrap
interval, RMSE, Pearson r, zero-shot MAE by target range), label efficiency, predicted-versus-true scatter plots
and DVC metrics."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .figures import efficiency_curves, empty_figure, method_colours, save_figure, subplot_grid
from .tables import (
    display_name,
    format_value,
    interval_cell,
    label_efficiency_table,
    ordered,
    parse_number,
    parse_results,
    parse_string,
    parse_subset,
)

PROTOCOLS = ("linear", "finetune", "fft", "zero_shot")
REGIONS = ("seen", "interpolation", "extrapolation")
PROTOCOL_TITLES = {"linear": "linear probe", "finetune": "fine-tuning", "fft": "FFT readout (no labels)",
                   "zero_shot": "zero-shot linear probe"}
PROTOCOL_LEGENDS = {
    "linear": "linear probe: a linear regressor on the frozen encoder's window embeddings",
    "finetune": "fine-tuning: encoder and regressor trained together (from a random init: the supervised regressor)",
    "fft": "FFT readout: no labels, the dominant frequency of each record's feature series in the searched band",
    "zero_shot": "zero-shot: the linear probe trained on part of the target range only (see below)",
}
REGION_COLOURS = {"seen": "0.55", "interpolation": "tab:orange", "extrapolation": "tab:red"}
REGION_FIELDS = ("mae", "ci_low", "ci_high", "n")
REGION_COLUMNS = [f"{region}_{field}" for region in REGIONS for field in REGION_FIELDS]
INTEGER_COLUMNS = ["best_epoch", "n_test_records", "n_missing", "n_test_without_target",
                   *(f"{region}_n" for region in REGIONS)]

RESULT_COLUMNS = ["method", "display", "protocol", "subset", "kind", "value", "n_train_records", "n_train_folds",
                  "target", "units", "test_mae", "ci_low", "ci_high", "ci_level", "n_bootstrap", "rmse", "pearson_r",
                  "n_test_records", "n_missing", "n_test_without_target", "val_mae", "best_epoch", *REGION_COLUMNS,
                  "hold_out_low", "hold_out_high", "train_max", "encoder", "predictions", "source"]
TABLE_COLUMNS = ["method", "display", "protocol", "target", "units", "test_mae", "ci_low", "ci_high", "rmse",
                 "pearson_r", "n_test_records", "n_missing", "n_test_without_target", "val_mae", "best_epoch",
                 "ci_level", "n_bootstrap", *REGION_COLUMNS, "hold_out_low", "hold_out_high", "train_max"]
EFFICIENCY_COLUMNS = ["method", "display", "protocol", "subset", "kind", "value", "n_train_records", "train_fraction",
                      "test_mae", "ci_low", "ci_high"]
NAN = float("nan")


def _interval(ci, what: str) -> tuple[float, float]:
    if not isinstance(ci, dict):
        raise ValueError(f"{what} must be an object, got {ci!r}")
    return (parse_number(ci["low"], f"{what}.low", optional=True),
            parse_number(ci["high"], f"{what}.high", optional=True))


def _zero_shot(r: dict) -> dict:
    """The region columns of a ``zero_shot`` result; a region without test records is ``{"n": 0}``."""
    regions, split = r["zero_shot"], r["zero_shot_split"]
    row = {}
    for region in REGIONS:
        entry = regions[region]
        n = parse_number(entry["n"], f"zero_shot.{region}.n", integer=True)
        if n == 0:
            row.update({f"{region}_mae": NAN, f"{region}_ci_low": NAN, f"{region}_ci_high": NAN, f"{region}_n": 0})
            continue
        low, high = _interval(entry["mae_ci"], f"zero_shot.{region}.mae_ci")
        row.update({f"{region}_mae": parse_number(entry["mae"], f"zero_shot.{region}.mae"), f"{region}_ci_low": low,
                    f"{region}_ci_high": high, f"{region}_n": n})
    hold_out = split["hold_out"]
    if not isinstance(hold_out, list) or len(hold_out) != 2:
        raise ValueError(f"zero_shot_split.hold_out must be [low, high], got {hold_out!r}")
    row.update(hold_out_low=parse_number(hold_out[0], "zero_shot_split.hold_out[0]"),
               hold_out_high=parse_number(hold_out[1], "zero_shot_split.hold_out[1]"),
               train_max=parse_number(split["train_max"], "zero_shot_split.train_max"))
    return row


def _parse(r: dict) -> dict:
    if not isinstance(r, dict):
        raise ValueError("the top level is not an object")
    method, protocol = parse_string(r["method"], "method"), parse_string(r["protocol"], "protocol")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    units = r["units"]
    if not isinstance(units, str):
        raise ValueError(f"units must be a string, got {units!r}")
    predictions = parse_string(r["predictions"], "predictions")
    if Path(predictions).name != predictions:
        raise ValueError(f"predictions must be a file name next to the result file, got {predictions!r}")
    test, ci = r["test"], r["test_ci"]
    low, high = _interval(ci, "test_ci")
    train_folds = r["folds"].get("train") if isinstance(r.get("folds"), dict) else None
    encoder = r.get("encoder")
    row = {
        "method": method, "display": display_name(method, protocol, encoder), "protocol": protocol,
        **parse_subset(r["subset"]), "n_train_folds": len(train_folds) if isinstance(train_folds, list) else NAN,
        "target": parse_string(r["target"], "target"), "units": units,
        "test_mae": parse_number(r["test_mae"], "test_mae"), "ci_low": low, "ci_high": high,
        "ci_level": parse_number(ci["level"], "test_ci.level"),
        "n_bootstrap": parse_number(ci["n_bootstrap"], "test_ci.n_bootstrap", integer=True),
        "rmse": parse_number(test["rmse"], "test.rmse"), "pearson_r": parse_number(test["pearson_r"], "test.pearson_r"),
        "n_test_records": parse_number(test["n"], "test.n", integer=True),
        "n_missing": parse_number(test["n_missing"], "test.n_missing", integer=True),
        "n_test_without_target": parse_number(r["n_without_target"]["test"], "n_without_target.test", integer=True),
        "val_mae": parse_number(r["val"]["mae"], "val.mae"),
        "best_epoch": parse_number(r["best_epoch"], "best_epoch", integer=True, optional=True),
        **{c: NAN for c in REGION_COLUMNS}, "hold_out_low": NAN, "hold_out_high": NAN, "train_max": NAN,
        "encoder": encoder, "predictions": predictions,
    }
    if protocol == "zero_shot":
        row.update(_zero_shot(r))
    return row


def load_periodic(paths: list[Path]) -> pd.DataFrame:
    """One row per periodic result file (columns ``RESULT_COLUMNS``; ``predictions``: the path of its ``.npz``);
    ValueError naming the file for a malformed one, naming both files for two results of the same method,
    protocol and subset, and for results of different targets or units."""
    rows, first = [], None
    for path, row in parse_results(paths, _parse, "periodic result"):
        if first is None:
            first = (path, row["target"], row["units"])
        elif (row["target"], row["units"]) != first[1:]:
            raise ValueError(f"{first[0]} and {path}: periodic results of different targets "
                             f"({first[1]!r} in {first[2]!r}, {row['target']!r} in {row['units']!r})")
        rows.append({**row, "predictions": str(Path(path).parent / row["predictions"]), "source": str(path)})
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in INTEGER_COLUMNS:
        df[column] = df[column].astype("Int64")
    return ordered(df, ["kind", "value"], PROTOCOLS).reset_index(drop=True)


def periodic_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method and protocol on all training labels (subset ``all``); the region columns only for the
    ``zero_shot`` protocol."""
    return results.loc[results.subset == "all", TABLE_COLUMNS].reset_index(drop=True)


def periodic_label_efficiency(results: pd.DataFrame) -> pd.DataFrame:
    """Test MAE per training fraction and fold count (with the ``all`` rows as fraction 1.0 and as all training
    folds), see :func:`physiossl.report.tables.label_efficiency_table`."""
    return label_efficiency_table(results, EFFICIENCY_COLUMNS, PROTOCOLS)


def _clean(value) -> float | int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value) if isinstance(value, (int, np.integer)) else round(float(value), 6)


def periodic_metrics(table: pd.DataFrame) -> dict:
    """DVC metrics of the main table: ``{"<method>/<protocol>": {test_mae, ci_low, ci_high, rmse, pearson_r}}``,
    plus ``<region>_mae`` for the zero-shot rows (None for a region without test records)."""
    out = {}
    for r in table.itertuples():
        entry = {k: _clean(getattr(r, k)) for k in ("test_mae", "ci_low", "ci_high", "rmse", "pearson_r")}
        if r.protocol == "zero_shot":
            entry.update({f"{region}_mae": _clean(getattr(r, f"{region}_mae")) for region in REGIONS})
        out[f"{r.method}/{r.protocol}"] = entry
    return out


def target_label(target: str, units: str) -> str:
    """``heart rate (bpm)``."""
    name = target.replace("_", " ")
    return f"{name} ({units})" if units else name


def _value(value, digits: int = 2) -> str:
    return format_value(float(value), digits) if isinstance(value, (int, float, np.number)) else format_value(value)


def _legend(table: pd.DataFrame, target: str, units: str) -> str:
    with_ci = table.dropna(subset=["ci_low", "ci_high"])
    specs = sorted({(float(r.ci_level), int(r.n_bootstrap)) for r in with_ci.itertuples()})
    text = f"Test mean absolute error (MAE) of the {target_label(target, units)} predicted for each test record"
    if specs:
        text += (" [" + "; ".join(f"{100 * level:g}% percentile bootstrap interval over {n} resamples of the test "
                                  f"records" for level, n in specs) + "], the same resamples for every method (paired)")
    text += ". RMSE and Pearson r over the same records."
    without = sorted({int(n) for n in table.n_test_without_target.dropna()})
    if any(without):
        text += (f" {' / '.join(map(str, without))} test record(s) without a {target.replace('_', ' ')} are "
                 f"left out.")
    protocols = [p for p in PROTOCOLS if p in set(table.protocol)]
    if protocols:
        text += "\n\nProtocols: " + "; ".join(PROTOCOL_LEGENDS[p] for p in protocols) + "."
    return text


def _records(r) -> str:
    missing = int(r.n_missing) if not pd.isna(r.n_missing) else 0
    return f"{r.n_test_records}" + (f" ({missing} unscored)" if missing else "")


def _region_cell(r, region: str) -> str:
    n = getattr(r, f"{region}_n")
    if pd.isna(n):
        return "n/a"
    if n == 0:
        return "no test records"
    mae, low, high = (getattr(r, f"{region}_{field}") for field in ("mae", "ci_low", "ci_high"))
    return f"{interval_cell(mae, low, high, 2)} (n={n})"


def _subset_label(kind: str, value) -> str:
    return f"{100 * value:g}%" if kind == "fraction" else f"{int(value)} folds"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(str(c) for c in cells) + " |" for cells in rows])


def periodic_markdown(table: pd.DataFrame, efficiency: pd.DataFrame, title: str, target: str, units: str) -> str:
    """The main table as Markdown (method, protocol, test MAE [interval] first), then a zero-shot section (MAE per
    target range of the test records) and a label-efficiency section where the results have them."""
    u = f" ({units})" if units else ""
    header = ["method", "protocol", f"test MAE{u} [CI]", "name", f"RMSE{u}", "Pearson r", "test records",
              f"val MAE{u}", "best epoch"]
    rows = [[r.method, r.protocol, interval_cell(r.test_mae, r.ci_low, r.ci_high, 2), r.display, _value(r.rmse),
             _value(r.pearson_r, 3), _records(r), _value(r.val_mae), format_value(r.best_epoch)]
            for r in table.itertuples()]
    lines = [f"# {title}", "", _legend(table, target, units), "", *_rows(header, rows)]

    zero_shot = table[table.protocol == "zero_shot"]
    if len(zero_shot):
        lines += ["", f"## Zero-shot: test MAE{u} by target range", ""]
        for (low, high, top), _ in zero_shot.groupby(["hold_out_low", "hold_out_high", "train_max"]):
            unit = f" {units}" if units else ""
            lines.append(f"Trained and selected on records with a {target.replace('_', ' ')} of at most {top:g}"
                         f"{unit} outside the held-out range [{low:g}, {high:g}]{unit}; tested on the test records "
                         f"in the training range (seen), inside the held-out range (interpolation) and above "
                         f"{top:g}{unit} (extrapolation).")
        header = ["method", "name", *(f"{region} MAE [CI]" for region in REGIONS)]
        lines += ["", *_rows(header, [[r.method, r.display, *(_region_cell(r, region) for region in REGIONS)]
                                      for r in zero_shot.itertuples()])]

    if len(efficiency):
        lines += ["", f"## Label efficiency: test MAE{u} by training subset", "",
                  "Training subsets: a fraction of the training records (nested random subsets, the same for every "
                  "method) or the first k training folds; \"all\" is the full training set."]
        partial = efficiency[efficiency.subset != "all"]
        columns = sorted(set(zip(partial.kind, partial.value)), key=lambda c: (c[0] != "fraction", c[0], c[1]))
        header = ["method", "protocol", "name", *(_subset_label(k, v) for k, v in columns), "all"]
        rows = []
        for (method, protocol), group in efficiency.groupby(["method", "protocol"], sort=False):
            cells = {(r.kind, r.value): interval_cell(r.test_mae, r.ci_low, r.ci_high, 2)
                     for r in group.itertuples()}
            full = group[group.subset == "all"]
            rows.append([method, protocol, group.display.iloc[0], *(cells.get(c, "n/a") for c in columns),
                         interval_cell(full.test_mae.iloc[0], full.ci_low.iloc[0], full.ci_high.iloc[0], 2)
                         if len(full) else "n/a"])
        lines += ["", *_rows(header, rows)]
    return "\n".join(lines) + "\n"


def load_predictions(path: Path, n_records: int | None = None, regions: bool = False) -> dict:
    """``y_true``, ``y_pred`` (and ``region``) of a ``.npz`` of test predictions; ValueError naming the file when it
    is unreadable, lacks an array, or holds another number of records than ``n_records``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = ("y_true", "y_pred", "region") if regions else ("y_true", "y_pred")
            arrays = {k: np.asarray(npz[k]).reshape(-1) for k in names}
        arrays["y_true"], arrays["y_pred"] = (arrays[k].astype(np.float64) for k in ("y_true", "y_pred"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not readable as test predictions ({type(exc).__name__}: {exc})") from exc
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or (n_records is not None and lengths["y_true"] != n_records):
        raise ValueError(f"{path}: array lengths {lengths} do not match the {n_records} test records of its result")
    return arrays


def _limits(arrays: list[dict]) -> tuple[float, float]:
    """Axis range: every target and the central 99% of the predictions (outliers are drawn at the edge)."""
    true = np.concatenate([a["y_true"] for a in arrays])
    pred = np.concatenate([a["y_pred"] for a in arrays])
    true, pred = true[np.isfinite(true)], pred[np.isfinite(pred)]
    if not len(true) and not len(pred):
        return 0.0, 1.0
    values = np.r_[true, np.percentile(pred, [0.5, 99.5]) if len(pred) else []]
    low, high = float(values.min()), float(values.max())
    pad = 0.04 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def _scatter(ax, true, pred, colour, limits, label=None) -> None:
    ok = np.isfinite(true) & np.isfinite(pred)
    true, pred = true[ok], pred[ok]
    inside = (pred >= limits[0]) & (pred <= limits[1])
    ax.scatter(true[inside], pred[inside], s=5, alpha=0.45, color=colour, lw=0, label=label, rasterized=True)
    for side, marker in ((pred < limits[0], "v"), (pred > limits[1], "^")):
        if side.any():
            ax.scatter(true[side], np.clip(pred[side], *limits), s=14, marker=marker, color=colour, lw=0,
                       clip_on=False)


def predictions_figure(results: pd.DataFrame, out: Path, title: str, colours: dict | None = None) -> None:
    """Predicted against true target of the test records, from the ``.npz`` of each run on all training labels
    (``results``: :func:`load_periodic`): a row of panels per protocol (linear probe, fine-tuning, FFT readout,
    zero-shot: those run), a column per method; identity line, MAE [interval] in each panel's title; zero-shot
    points coloured by target range, the held-out range shaded and the training maximum dashed."""
    table = results[results.subset == "all"]
    if not len(table):
        return empty_figure(out, title, "no periodic-target runs on all training labels")
    colours = colours or method_colours(table.method)
    protocols = [p for p in PROTOCOLS if p in set(table.protocol)]
    methods = list(dict.fromkeys(table.method))
    arrays = {(r.method, r.protocol): load_predictions(Path(r.predictions), int(r.n_test_records + r.n_missing),
                                                       r.protocol == "zero_shot") for r in table.itertuples()}
    limits = _limits(list(arrays.values()))
    target, units = table.target.iloc[0], table.units.iloc[0]
    fig, axes = plt.subplots(len(protocols), len(methods), squeeze=False, sharex=True, sharey=True,
                             figsize=(0.8 + 3.0 * len(methods), 0.6 + 3.0 * len(protocols)))
    rows = {(r.method, r.protocol): r for r in table.itertuples()}
    for i, protocol in enumerate(protocols):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            ax.set_xlim(*limits)
            ax.set_ylim(*limits)
            ax.set_aspect("equal", adjustable="box")
            if j == 0:
                ax.set_ylabel(f"{PROTOCOL_TITLES[protocol]}\npredicted{' (' + units + ')' if units else ''}",
                              fontsize=8)
            if i == len(protocols) - 1:
                ax.set_xlabel(f"true {target_label(target, units)}", fontsize=8)
            r = rows.get((method, protocol))
            if r is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, fontsize=8,
                        color="0.5")
                ax.tick_params(labelsize=7)
                continue
            a = arrays[(method, protocol)]
            ax.plot(limits, limits, "-", color="0.2", lw=0.8, zorder=3)
            if protocol == "zero_shot":
                ax.axvspan(r.hold_out_low, r.hold_out_high, color=REGION_COLOURS["interpolation"], alpha=0.08, lw=0)
                ax.axvline(r.train_max, color=REGION_COLOURS["extrapolation"], lw=0.8, ls="--")
                for region in REGIONS:
                    keep = a["region"] == region
                    _scatter(ax, a["y_true"][keep], a["y_pred"][keep], REGION_COLOURS[region], limits,
                             f"{region} (n={int(keep.sum())})")
                ax.legend(fontsize=6, loc="upper left", markerscale=2, handletextpad=0.2, borderpad=0.3)
            else:
                _scatter(ax, a["y_true"], a["y_pred"], colours.get(method, "C0"), limits)
            mae = interval_cell(r.test_mae, r.ci_low, r.ci_high, 2)
            r_text = "" if pd.isna(r.pearson_r) else f", r {r.pearson_r:.2f}"
            ax.set_title(f"{r.display}\nMAE {mae}{' ' + units if units else ''}{r_text}", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    save_figure(fig, out, title)


def label_efficiency_figure(efficiency: pd.DataFrame, out: Path, title: str, colours: dict | None = None,
                            units: str = "") -> None:
    """Test MAE against the fraction of labelled training records, a panel per protocol, a line per method and
    subset kind, the bootstrap interval shaded; a method run on all training labels only is a single marker."""
    if not len(efficiency):
        return empty_figure(out, title, "no periodic label-efficiency runs in this configuration")
    colours = colours or method_colours(efficiency.method)
    protocols = [p for p in PROTOCOLS if p in set(efficiency.protocol)]
    fig, axes = subplot_grid(len(protocols))
    for ax, protocol in zip(axes, protocols):
        runs = efficiency[efficiency.protocol == protocol]
        partial = set(runs.method[runs.subset != "all"])
        for method, rows in runs[~runs.method.isin(partial)].groupby("method"):
            ax.plot([1.0], rows.test_mae.iloc[:1], "D", ms=5, color=colours[method],
                    label=f"{rows.display.iloc[0]} (all labels only)")
        efficiency_curves(ax, runs[runs.method.isin(partial)], "test_mae", colours)
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.set_ylim(bottom=0.0)
    axes[0].set_ylabel(f"test MAE{' (' + units + ')' if units else ''}")
    save_figure(fig, out, title)


__all__ = ["EFFICIENCY_COLUMNS", "PROTOCOLS", "REGIONS", "RESULT_COLUMNS", "TABLE_COLUMNS", "label_efficiency_figure",
           "load_periodic", "load_predictions", "periodic_label_efficiency", "periodic_markdown", "periodic_metrics",
           "periodic_table", "predictions_figure", "target_label"]
