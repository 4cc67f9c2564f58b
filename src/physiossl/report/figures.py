"""Figures from result tables: one panel per protocol, one line or bar colour per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PROTOCOL_TITLES = {"linear": "linear evaluation", "finetune": "fine-tuning"}
KIND_STYLES = {"fraction": ("-", "o", ""), "folds": ("--", "s", " (folds)")}


def _protocols(df: pd.DataFrame) -> list[str]:
    known = [p for p in PROTOCOL_TITLES if p in set(df.protocol)]
    return known + sorted(set(df.protocol) - set(known))


def method_colours(methods) -> dict:
    """A colour per method (sorted); pass the same mapping to every figure of a report."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(sorted(set(methods)))}


def subplot_grid(n: int, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, max(n, 1), figsize=(0.6 + width * max(n, 1), height), sharey=True, squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, out: Path, title: str) -> None:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120, format="png", metadata={"Software": None})
    plt.close(fig)


def empty_figure(out: Path, title: str, message: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2.4))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10)
    save_figure(fig, out, title)


def _ylim(ax, values) -> None:
    values = np.asarray(values, dtype=float)
    low = np.nanmin(values) if np.isfinite(values).any() else 0.5
    ax.set_ylim(max(0.0, min(0.5, low - 0.05)), 1.0)


def efficiency_curves(ax, df: pd.DataFrame, score: str, colours: dict) -> None:
    """On ``ax``: one line per method and subset kind of a label-efficiency table (``score`` against the fraction
    of labelled training records, log scale) with its bootstrap interval as a band; a method and kind without any
    partial-label run are skipped."""
    for (method, kind), rows in df.groupby(["method", "kind"]):
        if not (rows.train_fraction < 1).any():
            continue
        rows = rows.sort_values("train_fraction")
        style, marker, suffix = KIND_STYLES.get(kind, (":", "^", f" ({kind})"))
        x = rows.train_fraction.to_numpy(dtype=float)
        ax.plot(x, rows[score].to_numpy(dtype=float), style, marker=marker, ms=4, color=colours[method],
                label=rows.display.iloc[0] + suffix)
        low, high = rows.ci_low.to_numpy(dtype=float), rows.ci_high.to_numpy(dtype=float)
        if np.isfinite(low).any():
            ax.fill_between(x, low, high, color=colours[method], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of labelled training records")
    ax.grid(alpha=0.3, which="both")


def macro_auc_bars(table: pd.DataFrame, out: Path, title: str, colours: dict | None = None) -> None:
    """Test macro AUC per protocol (panels) and method (bars) with the bootstrap interval as error bars."""
    if not len(table):
        return empty_figure(out, title, "no full-training-set runs in this configuration")
    colours = colours or method_colours(table.method)
    protocols = _protocols(table)
    fig, axes = subplot_grid(len(protocols), width=0.9 + 0.9 * table.groupby("protocol").size().max())
    for ax, protocol in zip(axes, protocols):
        rows = table[table.protocol == protocol]
        x = np.arange(len(rows))
        auc, low, high = (rows[c].to_numpy(dtype=float) for c in ("test_macro_auc", "ci_low", "ci_high"))
        yerr = np.nan_to_num(np.vstack([auc - low, high - auc]), nan=0.0).clip(min=0.0)
        bars = ax.bar(x, auc, 0.7, color=[colours[m] for m in rows.method], yerr=yerr, capsize=3,
                      error_kw={"elinewidth": 1})
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in auc], fontsize=7, padding=2, label_type="center")
        ax.set_xticks(x, rows.display, rotation=25, ha="right", fontsize=8)
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=9)
        _ylim(ax, np.r_[auc, low])
    axes[0].set_ylabel("test macro AUC")
    save_figure(fig, out, title)


def label_efficiency_lines(df: pd.DataFrame, out: Path, title: str, colours: dict | None = None) -> None:
    """Test macro AUC against the fraction of labelled training records, one line per method and subset kind."""
    if not len(df):
        return empty_figure(out, title, "no label-efficiency runs in this configuration")
    colours = colours or method_colours(df.method)
    protocols = _protocols(df)
    fig, axes = subplot_grid(len(protocols))
    for ax, protocol in zip(axes, protocols):
        efficiency_curves(ax, df[df.protocol == protocol], "test_macro_auc", colours)
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=9)
        ax.legend(fontsize=7, loc="best")
        _ylim(ax, np.r_[df.test_macro_auc, df.ci_low])
    axes[0].set_ylabel("test macro AUC")
    save_figure(fig, out, title)


def robustness_lines(df: pd.DataFrame, out: Path, title: str, colours: dict | None = None) -> None:
    """Test macro AUC against the noise level (0 = clean), one line per method."""
    if not len(df):
        return empty_figure(out, title, "no robustness runs in this configuration")
    colours = colours or method_colours(df.method)
    protocols = _protocols(df)
    fig, axes = subplot_grid(len(protocols))
    for ax, protocol in zip(axes, protocols):
        for method, rows in df[df.protocol == protocol].groupby("method"):
            rows = rows.sort_values("level")
            ax.plot(rows.level, rows.macro_auc, "-o", ms=4, color=colours[method], label=rows.display.iloc[0])
        ax.set_xlabel("noise level (0 = clean)")
        ax.set_xticks(sorted(df.level.unique()))
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        _ylim(ax, df.macro_auc)
    axes[0].set_ylabel("test macro AUC")
    save_figure(fig, out, title)
