"""Tables and figures of the sound-based sleep-staging ablation from its result files and the test predictions
saved next to them (``.npz``): the main table (4- and 3-class accuracy, Cohen's kappa and macro-F1 with their
night-bootstrap intervals, and the paired difference to supervised-only training), per-class F1, hypnograms,
confusion matrices and DVC metrics.

A result file is the JSON of one run: ``variant`` (``VARIANTS``), ``fraction`` (of the labeled nights),
``pool`` (unlabeled data: ``none``, ``in`` or ``ood``), ``model``, ``n_classes`` (the trained view), ``test`` and
``val`` (``{"4": staging_metrics + {"ci": night_bootstrap}, "3": ...}``, see :mod:`physiossl.eval.sleep`),
``best_epoch``, ``nights``, ``epochs`` and ``seed``. Its predictions are the ``.npz`` named by an optional
``predictions`` entry, by default the result file with the suffix ``.npz``: ``night`` (E,) night ids, ``index``
(E,) epoch index in the night, ``true`` and ``pred`` (E,) in the trained view (-1: unscored), ``probs`` (E, C).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..data.files import replace_path, tmp_sibling, write_text_atomic  # noqa: E402
from ..data.sleep.stages import UNSCORED, VIEWS, coarser_views, to_view  # noqa: E402
from ..eval.sleep import mean_night_bootstrap, paired_night_bootstrap, staging_metrics  # noqa: E402
from ..variants import VARIANTS as VARIANT_REGISTRY  # noqa: E402
from ..variants import variant_names  # noqa: E402
from .tables import format_value, interval_cell, parse_number, parse_string  # noqa: E402

VARIANTS = tuple(variant_names())           # in the order of the tables
VARIANT_LABELS = {name: VARIANT_REGISTRY[name].get("label", name) for name in VARIANTS}
POOLS = ("none", "in", "ood")
POOL_LABELS = {"none": "—", "in": "in-distribution", "ood": "+ out-of-distribution"}
TABLE_VIEWS = (4, 3)
DELTA_VIEW = 4
DELTA_METRICS = ("kappa", "macro_f1")
EPOCH_SECONDS = 30.0
# stage order of hypnograms, top to bottom: wake, REM, then NREM from light to deep
PLOT_ORDER = {5: ("W", "REM", "N1", "N2", "N3"), 4: ("wake", "REM", "light", "deep"), 3: ("wake", "REM", "NREM")}
REM_COLOUR = "tab:red"
SCORES = ("acc", "kappa", "macro_f1")
_JSON_NAMES = {"acc": "accuracy", "kappa": "kappa", "macro_f1": "macro_f1"}
VIEW_COLUMNS = [f"{score}_{view}{suffix}" for view in TABLE_VIEWS for score in SCORES
                for suffix in ("", "_low", "_high")]
DELTA_COLUMNS = [f"delta_{metric}_{DELTA_VIEW}{suffix}" for metric in DELTA_METRICS
                 for suffix in ("", "_low", "_high")]
RESULT_COLUMNS = ["model", "variant", "variant_label", "fraction", "pool", "pool_label", "n_classes", "seed",
                  *VIEW_COLUMNS, "ci_level", "n_bootstrap", "val_acc", "val_kappa", "val_macro_f1", "best_epoch",
                  "test_epochs", "nights_labeled", "nights_unlabeled", "nights_val", "nights_test",
                  "epochs_labeled", "epochs_unlabeled", *(f"per_class_f1_{v}" for v in TABLE_VIEWS),
                  *(f"support_{v}" for v in TABLE_VIEWS), *(f"confusion_{v}" for v in TABLE_VIEWS), "predictions",
                  "source"]
TABLE_COLUMNS = ["model", "variant", "variant_label", "fraction", "pool", "pool_label", "seed", *VIEW_COLUMNS,
                 *DELTA_COLUMNS, "ci_level", "n_bootstrap", "val_kappa", "val_macro_f1", "best_epoch",
                 "test_epochs", "nights_test", "nights_labeled", "nights_unlabeled", "reference"]
PER_CLASS_COLUMNS = ["model", "variant", "variant_label", "fraction", "pool", "pool_label", "seed",
                     *(f"f1_{name}" for name in VIEWS[DELTA_VIEW]), *(f"support_{name}" for name in VIEWS[DELTA_VIEW]),
                     f"macro_f1_{DELTA_VIEW}"]
SUMMARY_COLUMNS = ["model", "variant", "variant_label", "fraction", "pool", "pool_label", "n_seeds", "seeds",
                   *VIEW_COLUMNS, "kappa_4_sd", *DELTA_COLUMNS, "delta_kappa_4_sd", "delta_kappa_4_nonnegative",
                   "ci_level", "n_bootstrap", "val_kappa", "test_epochs", "nights_test", "nights_labeled",
                   "nights_unlabeled"]
GROUP_KEYS = ["model", "variant", "fraction", "pool"]
INTEGER_COLUMNS = ["n_classes", "seed", "best_epoch", "test_epochs", "nights_labeled", "nights_unlabeled",
                   "nights_val", "nights_test", "epochs_labeled", "epochs_unlabeled"]
NAN = float("nan")


# ----------------------------------------------------------------------------------------------- result files

def _view_scores(entry, what: str, ci: bool = True) -> dict:
    """``acc``, ``kappa``, ``macro_f1`` (and their ``_low`` / ``_high`` where a ``ci`` entry has them)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be an object, got {entry!r}")
    out = {score: parse_number(entry[name], f"{what}.{name}", optional=True) for score, name in _JSON_NAMES.items()}
    interval = entry.get("ci") if ci else None
    if interval is not None and not isinstance(interval, dict):
        raise ValueError(f"{what}.ci must be an object, got {interval!r}")
    for score, name in _JSON_NAMES.items():
        part = (interval or {}).get(name)
        if part is not None and not isinstance(part, dict):
            raise ValueError(f"{what}.ci.{name} must be an object, got {part!r}")
        out[f"{score}_low"] = parse_number(part["low"], f"{what}.ci.{name}.low", optional=True) if part else NAN
        out[f"{score}_high"] = parse_number(part["high"], f"{what}.ci.{name}.high", optional=True) if part else NAN
    return out


def _per_class(entry: dict, view: int, what: str) -> tuple[dict, dict, list]:
    names = VIEWS[view]
    f1, support, confusion = entry["per_class_f1"], entry["support"], entry["confusion"]
    if not isinstance(f1, dict) or not isinstance(support, dict):
        raise ValueError(f"{what}.per_class_f1 and {what}.support must be objects")
    f1 = {name: parse_number(f1[name], f"{what}.per_class_f1.{name}", optional=True) for name in names}
    support = {name: parse_number(support[name], f"{what}.support.{name}", integer=True) for name in names}
    matrix = np.asarray(confusion)
    if matrix.shape != (view, view) or not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"{what}.confusion must be a {view}×{view} matrix of counts")
    return f1, support, matrix.astype(int).tolist()


def _parse(r, path: Path) -> dict:
    if not isinstance(r, dict):
        raise ValueError("the top level is not an object")
    variant, pool = r["variant"], r["pool"]
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    fraction = parse_number(r["fraction"], "fraction")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_classes = parse_number(r["n_classes"], "n_classes", integer=True)
    views = coarser_views(n_classes)
    test, val = r["test"], r.get("val") or {}
    if not isinstance(test, dict) or not isinstance(val, dict):
        raise ValueError("test and val must be objects keyed by view")
    missing = [str(v) for v in views if str(v) not in test]
    if missing:
        raise ValueError(f"test lacks the view(s) {missing} of a {n_classes}-class run")
    row = {"model": parse_string(r["model"], "model"), "variant": variant, "variant_label": VARIANT_LABELS[variant],
           "fraction": fraction, "pool": pool, "pool_label": POOL_LABELS[pool], "n_classes": n_classes,
           "seed": parse_number(r.get("seed"), "seed", integer=True, optional=True)}
    levels, counts = set(), set()
    for view in TABLE_VIEWS:
        key = str(view)
        if view in views:
            scores = _view_scores(test[key], f"test.{key}")
            interval = test[key].get("ci") or {}
            if interval:
                levels.add(parse_number(interval["level"], f"test.{key}.ci.level"))
                counts.add(parse_number(interval["n_bootstrap"], f"test.{key}.ci.n_bootstrap", integer=True))
            f1, support, confusion = _per_class(test[key], view, f"test.{key}")
        else:
            scores = {f"{score}{suffix}": NAN for score in SCORES for suffix in ("", "_low", "_high")}
            f1, support, confusion = None, None, None
        row.update({f"{score}_{view}{suffix}": scores[f"{score}{suffix}"] for score in SCORES
                    for suffix in ("", "_low", "_high")})
        row.update({f"per_class_f1_{view}": f1, f"support_{view}": support, f"confusion_{view}": confusion})
    if len(levels) > 1 or len(counts) > 1:
        raise ValueError(f"test intervals of different levels {sorted(levels)} or resample counts {sorted(counts)}")
    trained = str(n_classes)
    val_scores = _view_scores(val[trained], f"val.{trained}", ci=False) if trained in val else {}
    nights, epochs = r["nights"], r["epochs"]
    if not isinstance(nights, dict) or not isinstance(epochs, dict):
        raise ValueError("nights and epochs must be objects")
    predictions = r.get("predictions")
    if predictions is None:
        predictions = Path(path).with_suffix(".npz").name
    elif not isinstance(predictions, str) or Path(predictions).name != predictions or not predictions:
        raise ValueError(f"predictions must be a file name next to the result file, got {predictions!r}")
    row.update({
        "ci_level": levels.pop() if levels else NAN, "n_bootstrap": counts.pop() if counts else NAN,
        **{f"val_{score}": val_scores.get(score, NAN) for score in SCORES},
        "best_epoch": parse_number(r.get("best_epoch"), "best_epoch", integer=True, optional=True),
        "test_epochs": parse_number(test[trained]["n_epochs"], f"test.{trained}.n_epochs", integer=True),
        **{f"nights_{k}": parse_number(nights.get(k), f"nights.{k}", integer=True, optional=True)
           for k in ("labeled", "unlabeled", "val", "test")},
        **{f"epochs_{k}": parse_number(epochs.get(k), f"epochs.{k}", integer=True, optional=True)
           for k in ("labeled", "unlabeled")},
        "predictions": str(Path(path).parent / predictions), "source": str(path),
    })
    return row


def _order(df: pd.DataFrame) -> pd.DataFrame:
    keys = df.assign(_variant=df.variant.map(VARIANTS.index), _pool=df.pool.map(POOLS.index))
    return (keys.sort_values(["model", "fraction", "_variant", "_pool", "seed"], kind="stable")
            .drop(columns=["_variant", "_pool"]).reset_index(drop=True))


def load_sleep_results(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per sleep-staging result file (columns ``RESULT_COLUMNS``; ``predictions``: the path of its
    ``.npz``), ordered by model, labeled fraction, variant (``VARIANTS``), pool and seed. ValueError naming the file
    for a malformed one, and naming both files for two runs of one model, variant, fraction, pool and seed."""
    rows, seen = [], {}
    for path in paths:
        try:
            row = _parse(json.loads(Path(path).read_text()), Path(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: not a physiossl sleep-staging result file ({type(exc).__name__}: {exc})") \
                from exc
        key = (row["model"], row["variant"], row["fraction"], row["pool"], row["seed"])
        if key in seen:
            raise ValueError(f"{seen[key]} and {path}: two sleep-staging results for model {key[0]!r}, variant "
                             f"{key[1]!r}, fraction {key[2]:g}, pool {key[3]!r}, seed {key[4]}")
        seen[key] = path
        rows.append(row)
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in INTEGER_COLUMNS:
        df[column] = df[column].astype("Int64")
    return _order(df) if len(df) else df


def load_sleep_predictions(path: Path, n_classes: int | None = None) -> dict:
    """``night`` (str), ``index`` (int64), ``true`` and ``pred`` (int64, trained view, -1 unscored) and ``probs``
    (float32, (E, C)) of a ``.npz`` of test predictions, plus ``n_classes`` (C). ValueError naming the file when it
    is unreadable, lacks an array, has arrays of different lengths, labels outside the view, or another number of
    classes than ``n_classes``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {"night": np.asarray(npz["night"]).astype(str).reshape(-1),
                   "index": np.asarray(npz["index"]).astype(np.int64).reshape(-1),
                   "true": np.asarray(npz["true"]).astype(np.int64).reshape(-1),
                   "pred": np.asarray(npz["pred"]).astype(np.int64).reshape(-1),
                   "probs": np.asarray(npz["probs"], dtype=np.float32)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not readable as sleep-staging test predictions ({type(exc).__name__}: {exc})") \
            from exc
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) != 1 or out["probs"].ndim != 2:
        raise ValueError(f"{path}: arrays of different lengths {lengths} or probs not (E, C)")
    c = out["probs"].shape[1]
    if c not in VIEWS or (n_classes is not None and c != n_classes):
        raise ValueError(f"{path}: probabilities over {c} classes, expected {n_classes or sorted(VIEWS)}")
    if ((out["true"] < UNSCORED) | (out["true"] >= c)).any() or ((out["pred"] < UNSCORED) | (out["pred"] >= c)).any():
        raise ValueError(f"{path}: stages outside -1..{c - 1}")
    out["n_classes"] = c
    return out


def _aligned(runs: Sequence[dict], paths: Sequence, view: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(true, [pred of each run], nights) of prediction files over the same test epochs, in the ``view``."""
    orders = [np.lexsort((d["index"], d["night"])) for d in runs]
    first, order0 = runs[0], orders[0]
    true = to_view(first["true"][order0], view, from_classes=first["n_classes"])
    for d, order, path in zip(runs[1:], orders[1:], paths[1:]):
        if (len(order) != len(order0) or not np.array_equal(d["night"][order], first["night"][order0])
                or not np.array_equal(d["index"][order], first["index"][order0])):
            raise ValueError(f"{paths[0]} and {path}: predictions of different test epochs")
        if not np.array_equal(to_view(d["true"][order], view, from_classes=d["n_classes"]), true):
            raise ValueError(f"{paths[0]} and {path}: different reference stages for the same test epochs")
    preds = [to_view(d["pred"][order], view, from_classes=d["n_classes"]) for d, order in zip(runs, orders)]
    return true, preds, first["night"][order0]


class _Predictions(dict):
    """Test predictions of result rows by ``.npz`` path, read once; None where the file is missing."""

    def of(self, row) -> dict | None:
        if row.predictions not in self:
            path = Path(row.predictions)
            self[row.predictions] = load_sleep_predictions(path, int(row.n_classes)) if path.is_file() else None
        return self[row.predictions]


# ----------------------------------------------------------------------------------------------------- tables

def _reference(df: pd.DataFrame, r) -> pd.Series | None:
    """The supervised-only run compared with row ``r``: same model and labeled fraction, the same seed where one
    was run, otherwise the only supervised run at that fraction."""
    candidates = df[(df.variant == "supervised") & (df.model == r.model) & np.isclose(df.fraction, r.fraction)]
    same_seed = candidates[candidates.seed == r.seed] if not pd.isna(r.seed) else candidates.iloc[:0]
    if len(same_seed):
        candidates = same_seed
    if len(candidates) != 1:
        candidates = candidates[candidates.pool == "none"]
    return candidates.iloc[0] if len(candidates) == 1 else None


def sleep_table(df: pd.DataFrame, n_bootstrap: int | None = None, level: float | None = None,
                seed: int = 0) -> pd.DataFrame:
    """The main table (columns ``TABLE_COLUMNS``), one row per run of :func:`load_sleep_results`: 4- and 3-class
    accuracy, kappa and macro-F1 with their intervals, and for every run but supervised-only the difference of
    4-class kappa and macro-F1 to the supervised-only run at the same labeled fraction (``reference``: its result
    file). Where both runs' prediction files exist, the difference gets a paired night-bootstrap interval
    (:func:`~physiossl.eval.sleep.paired_night_bootstrap`, ``n_bootstrap`` resamples at ``level``, by default
    those of the run's own interval, else 1000 at 0.95)."""
    out = df.copy()
    for column in DELTA_COLUMNS:
        out[column] = NAN
    out["reference"] = None
    predictions = _Predictions()

    for r in out.itertuples():
        i = r.Index
        if r.variant == "supervised":
            continue
        ref = _reference(df, r)
        if ref is None:
            continue
        out.at[i, "reference"] = ref.source
        for metric in DELTA_METRICS:
            out.at[i, f"delta_{metric}_{DELTA_VIEW}"] = (getattr(r, f"{metric}_{DELTA_VIEW}")
                                                         - ref[f"{metric}_{DELTA_VIEW}"])
        if DELTA_VIEW not in coarser_views(int(r.n_classes)) or DELTA_VIEW not in coarser_views(int(ref.n_classes)):
            continue
        a, b = predictions.of(ref), predictions.of(r)
        if a is None or b is None:
            continue
        true, (pred_a, pred_b), nights = _aligned([a, b], [ref.predictions, r.predictions], DELTA_VIEW)
        n = n_bootstrap or (int(r.n_bootstrap) if not pd.isna(r.n_bootstrap) else 1000)
        lvl = level or (float(r.ci_level) if not pd.isna(r.ci_level) else 0.95)
        for metric in DELTA_METRICS:
            ci = paired_night_bootstrap(true, pred_a, pred_b, nights, DELTA_VIEW, metric, n, lvl, seed)
            out.at[i, f"delta_{metric}_{DELTA_VIEW}_low"] = ci["low"]
            out.at[i, f"delta_{metric}_{DELTA_VIEW}_high"] = ci["high"]
    return out[TABLE_COLUMNS].reset_index(drop=True)


def _interval_spec(rows: pd.DataFrame, n_bootstrap: int | None, level: float | None) -> tuple[int, float]:
    n = n_bootstrap or (int(rows.n_bootstrap.dropna().iloc[0]) if rows.n_bootstrap.notna().any() else 1000)
    return n, level or (float(rows.ci_level.dropna().iloc[0]) if rows.ci_level.notna().any() else 0.95)


def summary_table(df: pd.DataFrame, table: pd.DataFrame | None = None, n_bootstrap: int | None = None,
                  level: float | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per model, variant, labeled fraction and pool (columns ``SUMMARY_COLUMNS``): the scores of
    :func:`sleep_table` (``table``, computed when not given) averaged over the seeds that were run (``seeds``, their
    count ``n_seeds``), the standard deviation of 4-class kappa and of its difference to supervised-only over seeds
    and the number of seeds whose difference is not negative. A configuration run with one seed keeps its run's
    values and intervals. Over several seeds, the intervals come from resampling whole test nights, the same nights
    for every seed (and its supervised-only reference), scoring each seed and averaging
    (:func:`~physiossl.eval.sleep.mean_night_bootstrap`), where every run's predictions are available."""
    table = sleep_table(df, n_bootstrap, level, seed) if table is None else table
    predictions, rows = _Predictions(), []
    for _, runs in table.groupby(GROUP_KEYS, sort=False):
        first, source = runs.iloc[0], df.loc[runs.index]
        row = {c: first[c] for c in ("model", "variant", "variant_label", "fraction", "pool", "pool_label")}
        row.update(n_seeds=len(runs), seeds=" ".join(str(s) for s in runs.seed if not pd.isna(s)))
        numeric = [*VIEW_COLUMNS, *DELTA_COLUMNS, "ci_level", "n_bootstrap", "val_kappa", "test_epochs",
                   "nights_test", "nights_labeled", "nights_unlabeled"]
        row.update(runs[numeric].astype(float).mean().to_dict() if len(runs) > 1 else first[numeric].to_dict())
        row["kappa_4_sd"] = runs.kappa_4.astype(float).std() if len(runs) > 1 else NAN
        delta = runs[f"delta_kappa_{DELTA_VIEW}"].astype(float)
        row["delta_kappa_4_sd"] = delta.std() if len(runs) > 1 else NAN
        row["delta_kappa_4_nonnegative"] = int((delta >= 0).sum()) if delta.notna().all() else pd.NA
        if len(runs) > 1:
            row.update(_seed_intervals(df, source, predictions, *_interval_spec(runs, n_bootstrap, level), seed))
        rows.append(row)
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for column in ("n_seeds", "delta_kappa_4_nonnegative", "test_epochs", "nights_test", "nights_labeled",
                   "nights_unlabeled"):   # the same in every seed's run; averages of counts otherwise rounded
        out[column] = pd.to_numeric(out[column], errors="coerce").round().astype("Int64")
    return out


def _seed_intervals(df: pd.DataFrame, runs: pd.DataFrame, predictions: _Predictions, n: int, level: float,
                    seed: int) -> dict:
    """Night-bootstrap intervals of the seed means of one configuration's ``runs`` (rows of ``df``): the scores of
    every table view and the 4-class differences to supervised-only (NaN where a prediction file is missing)."""
    out = {c: NAN for c in VIEW_COLUMNS + DELTA_COLUMNS if c.endswith(("_low", "_high"))}
    data = [predictions.of(r) for r in runs.itertuples()]
    if any(d is None for d in data):
        return out
    paths = runs.predictions.tolist()
    for view in TABLE_VIEWS:
        if view in coarser_views(int(runs.n_classes.min())):
            true, preds, nights = _aligned(data, paths, view)
            ci = mean_night_bootstrap(true, preds, nights, view, None, n, level, seed)
            for score, name in _JSON_NAMES.items():
                out[f"{score}_{view}_low"], out[f"{score}_{view}_high"] = ci[name]["low"], ci[name]["high"]
    references = [_reference(df, r) for r in runs.itertuples()]
    if runs.variant.iloc[0] == "supervised" or any(ref is None for ref in references):
        return out
    ref_data = [predictions.of(ref) for ref in references]
    if any(d is None for d in ref_data) or DELTA_VIEW not in coarser_views(int(runs.n_classes.min())):
        return out
    true, preds, nights = _aligned(data + ref_data, paths + [ref.predictions for ref in references], DELTA_VIEW)
    k = len(data)
    ci = mean_night_bootstrap(true, preds[:k], nights, DELTA_VIEW, preds[k:], n, level, seed)
    for metric in DELTA_METRICS:
        out[f"delta_{metric}_{DELTA_VIEW}_low"] = ci[metric]["low"]
        out[f"delta_{metric}_{DELTA_VIEW}_high"] = ci[metric]["high"]
    return out


def per_class_table(df: pd.DataFrame) -> pd.DataFrame:
    """4-class test F1 and support of each class (columns ``PER_CLASS_COLUMNS``), one row per run with a 4-class
    view."""
    rows = []
    for r in df.itertuples():
        f1, support = getattr(r, f"per_class_f1_{DELTA_VIEW}"), getattr(r, f"support_{DELTA_VIEW}")
        if f1 is None:
            continue
        rows.append({"model": r.model, "variant": r.variant, "variant_label": r.variant_label,
                     "fraction": r.fraction, "pool": r.pool, "pool_label": r.pool_label, "seed": r.seed,
                     **{f"f1_{name}": f1[name] for name in VIEWS[DELTA_VIEW]},
                     **{f"support_{name}": support[name] for name in VIEWS[DELTA_VIEW]},
                     f"macro_f1_{DELTA_VIEW}": getattr(r, f"macro_f1_{DELTA_VIEW}")})
    out = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    out["seed"] = out["seed"].astype("Int64")
    return out


def _clean(value) -> float | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 6)


def _run_key(r, models: int, seeds: int) -> str:
    key = f"{r.variant}/{r.fraction:g}/{r.pool}"
    if models > 1:
        key = f"{r.model}/{key}"
    return f"{key}/seed{r.seed}" if seeds > 1 else key


def sleep_metrics(df: pd.DataFrame) -> dict:
    """DVC metrics: ``{"<variant>/<fraction>/<pool>": {acc_4, kappa_4, macro_f1_4, acc_3, kappa_3, macro_f1_3}}``
    (the key prefixed with the model when there are several), plus ``delta_kappa_4`` and ``delta_macro_f1_4`` when
    ``df`` is a :func:`sleep_table` or :func:`summary_table`, and ``n_seeds`` and the standard deviations over seeds
    for a :func:`summary_table`. Runs of several seeds (a frame with a ``seed`` column) get keys suffixed with
    ``/seed<seed>``."""
    fields = [f"{score}_{view}" for view in TABLE_VIEWS for score in SCORES]
    fields += [c for c in (f"delta_{m}_{DELTA_VIEW}" for m in DELTA_METRICS) if c in df.columns]
    fields += [c for c in ("n_seeds", "kappa_4_sd", "delta_kappa_4_sd") if c in df.columns]
    models, seeds = df.model.nunique(), df.seed.nunique() if "seed" in df.columns else 1
    return {_run_key(r, models, seeds): {f: _clean(getattr(r, f)) for f in fields} for r in df.itertuples()}


def _signed(value: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(value) else f"{value:+.{digits}f}".replace("-", "−")


def _delta_cell(r, metric: str) -> str:
    value = getattr(r, f"delta_{metric}_{DELTA_VIEW}")
    if r.variant == "supervised":
        return "—"
    low, high = getattr(r, f"delta_{metric}_{DELTA_VIEW}_low"), getattr(r, f"delta_{metric}_{DELTA_VIEW}_high")
    if pd.isna(value) or pd.isna(low) or pd.isna(high):
        return _signed(value)
    return f"{_signed(value)} [{_signed(low)}, {_signed(high)}]"


def _cell(r, score: str, view: int, interval: bool = True) -> str:
    value = getattr(r, f"{score}_{view}")
    if not interval:
        return format_value(float(value), 3)
    return interval_cell(float(value), float(getattr(r, f"{score}_{view}_low")),
                         float(getattr(r, f"{score}_{view}_high")), 3)


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(str(c) for c in cells) + " |" for cells in rows])


def _legend(table: pd.DataFrame, seeds: bool) -> str:
    specs = sorted({(float(r.ci_level), int(r.n_bootstrap)) for r in table.dropna(subset=["ci_level", "n_bootstrap"])
                    .itertuples()})
    text = ("Epoch-level test metrics (30 s epochs; unscored epochs left out) of the trained 4-class view (wake, "
            "light = N1 + N2, deep = N3, REM) and of the 3-class view derived from it (wake, NREM, REM); kappa is "
            "Cohen's, macro-F1 averages the classes present in the test nights.")
    if seeds:
        text += (" Scores are means over the seeds of each configuration (the seed sets the labeled nights, the "
                 "initialisation and the order of the batches; the test nights are the same); sd: standard "
                 "deviation over seeds.")
    if specs:
        text += (" Intervals: " + "; ".join(f"{100 * level:g}% percentile bootstrap over {n} resamples of whole test "
                                            f"nights" for level, n in specs)
                 + (" (the same nights for every seed, scores averaged over seeds)" if seeds else "") + ".")
    text += (" Δ: difference to supervised-only training at the same labeled fraction" + (" and seed, averaged over "
             "seeds" if seeds else "") + ", with a paired night-bootstrap interval (the same resampled nights for both "
             "runs) where both runs' predictions are available.")
    return text


def _label_cells(r, seed: bool) -> list[str]:
    cells = [r.variant_label, f"{100 * r.fraction:g}%", r.pool_label]
    return cells + [format_value(r.seed)] if seed else cells


SCORE_HEADER = ["4-class accuracy", "4-class kappa [CI]", "4-class macro-F1 [CI]", "3-class accuracy",
                "3-class kappa [CI]", "3-class macro-F1 [CI]", "Δ kappa (4-class) [CI]", "Δ macro-F1 (4-class) [CI]"]


def _score_cells(r) -> list[str]:
    return [_cell(r, "acc", 4, False), _cell(r, "kappa", 4), _cell(r, "macro_f1", 4), _cell(r, "acc", 3, False),
            _cell(r, "kappa", 3), _cell(r, "macro_f1", 3), _delta_cell(r, "kappa"), _delta_cell(r, "macro_f1")]


def _seed_cells(r) -> list[str]:
    nonnegative = "—" if r.variant == "supervised" or pd.isna(r.delta_kappa_4_nonnegative) else \
        f"{int(r.delta_kappa_4_nonnegative)} of {int(r.n_seeds)}"
    return [str(int(r.n_seeds)), format_value(float(r.kappa_4_sd), 3),
            "—" if r.variant == "supervised" else format_value(float(r.delta_kappa_4_sd), 3), nonnegative]


def sleep_markdown(summary: pd.DataFrame, table: pd.DataFrame, per_class: pd.DataFrame,
                   title: str = "Sound-based sleep staging") -> str:
    """The main table (:func:`summary_table`), the runs of every seed (:func:`sleep_table`) when a configuration was
    run with several, and the per-class F1 table, as Markdown."""
    seeds = bool(len(summary)) and int(summary.n_seeds.max()) > 1
    models = sorted(set(summary.model))
    ident = ["variant", "labeled", "unlabeled pool"]
    seed_header = ["seeds", "4-class kappa sd", "Δ kappa sd", "seeds with Δ kappa ≥ 0"] if seeds else []
    lines = [f"# {title}", "", _legend(summary, seeds)]
    for model in models:
        rows = [[*_label_cells(r, False), *_score_cells(r), *(_seed_cells(r) if seeds else []),
                 format_value(r.nights_test)] for r in summary[summary.model == model].itertuples()]
        lines += ["", f"## {model}" if len(models) > 1 else f"Model: {model}.", "",
                  *_rows([*ident, *SCORE_HEADER, *seed_header, "test nights"], rows)]
    if not models:
        lines += ["", "No sleep-staging results."]
    if seeds:
        lines += ["", "## Runs of every seed", ""]
        rows = [[r.model, *_label_cells(r, True), *_score_cells(r), format_value(r.nights_test)]
                for r in table.itertuples()]
        lines += _rows(["model", *ident, "seed", *SCORE_HEADER, "test nights"], rows)
    names = VIEWS[DELTA_VIEW]
    lines += ["", "## Per-class F1 (4-class view, test)", ""]
    header = ["model", *ident, *(["seed"] if seeds else []), *names, "macro-F1",
              "test epochs per class (" + " / ".join(names) + ")"]
    rows = [[r.model, *_label_cells(r, seeds), *(format_value(float(getattr(r, f"f1_{n}")), 3) for n in names),
             format_value(float(getattr(r, f"macro_f1_{DELTA_VIEW}")), 3),
             " / ".join(str(int(getattr(r, f"support_{n}"))) for n in names)] for r in per_class.itertuples()]
    lines += _rows(header, rows)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- figures

def _save_png(fig, out: Path) -> None:
    """Write ``fig`` as PNG to ``out`` atomically (a temporary sibling renamed into place) and close it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(out)
    try:
        fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None})
        replace_path(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def _message_figure(out: Path, title: str, message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10)
    fig.suptitle(title, fontsize=9)
    _save_png(fig, out)


def _night_series(data: dict, night: str, view: int, length: int) -> np.ndarray:
    """(length, 2) true and predicted stage of each epoch index of ``night`` in ``view``; -1 where unscored or
    absent."""
    rows = data["night"] == night
    series = np.full((length, 2), UNSCORED, dtype=np.int64)
    index = data["index"][rows]
    series[index, 0] = to_view(data["true"][rows], view, from_classes=data["n_classes"])
    series[index, 1] = to_view(data["pred"][rows], view, from_classes=data["n_classes"])
    return series


def _choose_night(runs: dict[str, dict], night: str | None) -> str:
    common = set.intersection(*(set(np.unique(d["night"])) for d in runs.values()))
    if night is not None:
        if night not in common:
            raise ValueError(f"night {night!r} is not in the test predictions of every run")
        return night
    if not common:
        raise ValueError("the runs share no test night")
    first = next(iter(runs.values()))
    scored = first["night"][first["true"] != UNSCORED]
    counts = {n: int((scored == n).sum()) for n in sorted(common)}
    return max(counts, key=lambda n: (counts[n], -sorted(common).index(n)))


def _stairs(ax, edges: np.ndarray, levels: np.ndarray, **style) -> None:
    """Stepped line of one level per epoch between consecutive ``edges`` (one more than levels); NaN levels are
    gaps."""
    ax.step(edges, np.r_[levels, levels[-1:]], where="post", **style)


def hypnogram_figure(npz_paths_by_label: Mapping[str, Path], out: Path, night: str | None = None,
                     title: str | None = None) -> str:
    """Hypnograms of one test night: the reference stages, then one row per run's predictions (labels: the keys
    of ``npz_paths_by_label``), stages from top to bottom wake, REM, then NREM from light to deep (the coarsest
    trained view of the runs), REM drawn in red, epochs unscored in the reference (or missing from a file) as gaps in
    every row, x in hours from the start of the night (epoch index 0); the reference stages are those of the first
    file. ``night``: by default the night common to all runs with the most scored epochs (the
    first by id among equals). Writes a PNG to ``out`` atomically; returns the night drawn."""
    if not npz_paths_by_label:
        raise ValueError("hypnogram_figure needs at least one prediction file")
    runs = {label: load_sleep_predictions(Path(path)) for label, path in npz_paths_by_label.items()}
    night = _choose_night(runs, night)
    view = min(d["n_classes"] for d in runs.values())
    order = PLOT_ORDER[view]
    position = np.array([order.index(name) for name in VIEWS[view]] + [-1], dtype=float)
    position[-1] = np.nan                                                    # index -1: unscored → gap
    length = int(max(d["index"][d["night"] == night].max() for d in runs.values())) + 1
    series = {label: _night_series(d, night, view, length) for label, d in runs.items()}
    hours = np.arange(length + 1) * EPOCH_SECONDS / 3600.0
    rem = VIEWS[view].index("REM")
    reference = next(iter(series.values()))[:, 0]
    panels = [("reference (PSG)", reference, None)]
    panels += [(label, np.where(reference == UNSCORED, UNSCORED, s[:, 1]), staging_metrics(s[:, 0], s[:, 1], view))
               for label, s in series.items()]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(10, 0.6 + 1.35 * len(panels)))
    for ax, (label, stages, scores) in zip(axes[:, 0], panels):
        levels = position[stages]
        _stairs(ax, hours, levels, color="0.25", lw=0.9)
        _stairs(ax, hours, np.where(stages == rem, levels, np.nan), color=REM_COLOUR, lw=3.0,
                solid_capstyle="butt")
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
        text = label if scores is None else (f"{label}: accuracy {format_value(scores['accuracy'], 2)}, kappa "
                                             f"{format_value(scores['kappa'], 2)} on this night")
        ax.set_title(text, fontsize=8, loc="left")
    axes[-1, 0].set_xlim(0, hours[-1])
    axes[-1, 0].set_xlabel("hours from the start of the night")
    fig.suptitle(title or f"Hypnograms of test night {night}", fontsize=9)
    fig.tight_layout()
    _save_png(fig, out)
    return night


def _run_label(r) -> str:
    pool = "" if r.pool == "none" else f", {r.pool_label}"
    return f"{r.variant_label} ({100 * r.fraction:g}% labeled{pool})"


def confusion_figure(results: pd.DataFrame | Sequence[Path], out: Path, view: int = 4,
                     title: str | None = None) -> None:
    """Row-normalised test confusion matrices of the ``view`` (rows: reference stage), one panel per configuration
    of ``results`` (a :func:`load_sleep_results` frame or result files; the counts of its seeds summed, its kappa
    averaged over them) with the share of each cell; PNG written atomically to ``out``."""
    df = results if isinstance(results, pd.DataFrame) else load_sleep_results(list(results))
    df = df[df[f"confusion_{view}"].notna()]
    panels = [(runs.iloc[0], np.sum([np.asarray(c, dtype=float) for c in runs[f"confusion_{view}"]], axis=0),
               float(runs[f"kappa_{view}"].astype(float).mean()), len(runs))
              for _, runs in df.groupby(GROUP_KEYS, sort=False)]
    title = title or f"Test confusion matrices ({view}-class view, rows normalised)"
    if not panels:
        return _message_figure(out, title, f"no sleep-staging runs with a {view}-class view")
    names = VIEWS[view]
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(0.6 + 3.2 * columns, 0.6 + 3.5 * rows))
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (r, counts, kappa, n_seeds) in zip(axes.ravel(), panels):
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="Blues")
        for i in range(view):
            for j in range(view):
                ax.text(j, i, f"{100 * shares[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.6 else "black")
        ax.set_xticks(range(view), names, fontsize=7)
        ax.set_yticks(range(view), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("reference", fontsize=7)
        seeds = f" (mean of {n_seeds} seeds)" if n_seeds > 1 else ""
        ax.set_title(f"{_run_label(r)}\nkappa {format_value(kappa, 3)}{seeds}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_png(fig, out)


def _hypnogram_runs(df: pd.DataFrame, variants: Sequence[str]) -> dict[str, Path]:
    """Prediction files of one run per variant in ``variants`` (those with predictions): the smallest labeled
    fraction that all of them were run at (else each variant's smallest), the in-distribution pool before the
    out-of-distribution one, the lowest seed."""
    have = df[df.variant.isin(variants) & df.predictions.map(lambda p: Path(p).is_file())]
    present = [v for v in variants if v in set(have.variant)]
    if not present:
        return {}
    shared = set.intersection(*(set(have.fraction[have.variant == v]) for v in present))
    runs = {}
    for variant in present:
        rows = have[have.variant == variant]
        rows = rows[rows.fraction == min(shared)] if shared else rows[rows.fraction == rows.fraction.min()]
        r = rows.assign(_pool=rows.pool.map(POOLS.index)).sort_values(["_pool", "seed"], kind="stable").iloc[0]
        runs[_run_label(r) + (f", seed {r.seed}" if rows.seed.nunique() > 1 else "")] = Path(r.predictions)
    return runs


OUTPUTS = ("sleep.md", "sleep.csv", "sleep_runs.csv", "sleep_per_class.csv", "hypnogram.png", "sleep_confusion.png")


def write_sleep_report(result_paths: Sequence[Path], out_dir: Path,
                       hypnogram_variants: Sequence[str] = ("supervised", "both"), *,
                       title: str = "Sound-based sleep staging", n_bootstrap: int | None = None,
                       level: float | None = None, seed: int = 0) -> tuple[dict[str, Path], pd.DataFrame]:
    """Write ``OUTPUTS`` to ``out_dir``, each atomically: the main table over seeds (Markdown, ``sleep.csv``; see
    :func:`summary_table`), the table of every run (``sleep_runs.csv``), the per-class F1 table (CSV), hypnograms of
    ``hypnogram_variants`` (see :func:`hypnogram_figure`; a figure saying so when none of them has predictions) and
    confusion matrices. Returns ``{file name: path}`` and the main table. Interval arguments: see
    :func:`sleep_table`."""
    out_dir = Path(out_dir)
    df = load_sleep_results(list(result_paths))
    table = sleep_table(df, n_bootstrap, level, seed)
    summary = summary_table(df, table, n_bootstrap, level, seed)
    per_class = per_class_table(df)
    paths = {name: out_dir / name for name in OUTPUTS}
    write_text_atomic(paths["sleep.md"], sleep_markdown(summary, table, per_class, title))
    write_text_atomic(paths["sleep.csv"], summary.to_csv(index=False))
    write_text_atomic(paths["sleep_runs.csv"], table.to_csv(index=False))
    write_text_atomic(paths["sleep_per_class.csv"], per_class.to_csv(index=False))
    runs = _hypnogram_runs(df, hypnogram_variants)
    if runs:
        hypnogram_figure(runs, paths["hypnogram.png"])
    else:
        _message_figure(paths["hypnogram.png"], f"{title}: hypnograms",
                        f"no test predictions of {', '.join(hypnogram_variants)}")
    confusion_figure(df, paths["sleep_confusion.png"], DELTA_VIEW, f"{title}: test confusion matrices (4-class, "
                                                                   f"rows normalised)")
    return paths, summary


__all__ = ["OUTPUTS", "POOLS", "POOL_LABELS", "RESULT_COLUMNS", "SUMMARY_COLUMNS", "TABLE_COLUMNS", "VARIANTS",
           "VARIANT_LABELS", "confusion_figure", "hypnogram_figure", "load_sleep_predictions", "load_sleep_results",
           "per_class_table", "sleep_markdown", "sleep_metrics", "sleep_table", "summary_table", "write_sleep_report"]
