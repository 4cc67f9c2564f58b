"""Sleep labels: the stored 5-stage coding, the 4- and 3-class views derived from it at load time, and the
respiratory event types.

Stores hold ``labels/stage`` int8 with W, N1, N2, N3, REM as 0..4 and -1 for unscored or unlabeled epochs
(docs/stores.md). Models are trained on one view; every coarser view is derived from its labels and predictions:
4 classes (wake, light = N1 + N2, deep = N3, REM) and 3 classes (wake, NREM, REM).
"""

from __future__ import annotations

import numpy as np

STAGES = ("W", "N1", "N2", "N3", "REM")
#: Respiratory event types stored as ``events/<type>`` (seconds per epoch) in every sleep store: PSG-Audio's types of
#: the families Respiratory and Nasal; stores of unlabeled recordings hold them as zeros, so stores can be pooled
EVENT_TYPES = ("ObstructiveApnea", "CentralApnea", "MixedApnea", "Hypopnea", "Snore")
UNSCORED = -1
VIEWS = {
    5: STAGES,
    4: ("wake", "light", "deep", "REM"),
    3: ("wake", "NREM", "REM"),
}
# row: the view a label is in; value at index c: the class of the coarser view it maps to
_MAPS = {
    (5, 5): (0, 1, 2, 3, 4),
    (5, 4): (0, 1, 1, 2, 3),
    (5, 3): (0, 1, 1, 1, 2),
    (4, 4): (0, 1, 2, 3),
    (4, 3): (0, 1, 1, 2),
    (3, 3): (0, 1, 2),
}


def coarser_views(n_classes: int) -> list[int]:
    """The views derivable from labels in ``n_classes`` classes, finest first (e.g. 4 → [4, 3])."""
    if n_classes not in VIEWS:
        raise ValueError(f"no sleep-stage view with {n_classes} classes (available: {sorted(VIEWS)})")
    return [n for n in sorted(VIEWS, reverse=True) if n <= n_classes]


def to_view(labels: np.ndarray, n_classes: int, from_classes: int = 5) -> np.ndarray:
    """Map labels of the ``from_classes`` view (5: the stored W, N1, N2, N3, REM) to the ``n_classes`` view;
    -1 (unscored / unlabeled) stays -1. Returns int64."""
    key = (from_classes, n_classes)
    if key not in _MAPS:
        raise ValueError(f"cannot map {from_classes}-class sleep stages to {n_classes} classes "
                         f"(possible: {sorted(_MAPS)})")
    labels = np.asarray(labels)
    bad = (labels < UNSCORED) | (labels >= from_classes)
    if bad.any():
        raise ValueError(f"sleep-stage labels outside -1..{from_classes - 1}: {np.unique(labels[bad]).tolist()}")
    table = np.asarray(_MAPS[key] + (UNSCORED,), dtype=np.int64)   # index -1 → the appended UNSCORED
    return table[labels.astype(np.int64)]
