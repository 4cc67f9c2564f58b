"""Figures from result tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def macro_auc_bars(df: pd.DataFrame, out: Path, title: str) -> None:
    """Grouped bars: test macro AUC per protocol (groups) and method (bars)."""
    protocols, methods = sorted(df.protocol.unique()), sorted(df.method.unique())
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(protocols), 3.2))
    for j, method in enumerate(methods):
        values = [df[(df.protocol == p) & (df.method == method)].test_macro_auc.mean() for p in protocols]
        bars = ax.bar(np.arange(len(protocols)) + (j - (len(methods) - 1) / 2) * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(np.arange(len(protocols)), protocols)
    ax.set_ylabel("test macro AUC")
    low = np.nanmin(df.test_macro_auc.values) if len(df) else 0.5
    ax.set_ylim(max(0.0, min(0.5, low - 0.05)), 1.0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
