"""Dataset sources. Each module ``<name>.py`` offers the same API:

- ``download(out_dir, url=..., progress=True)``: fetch and verify the raw tree;
- ``demo(out_dir, n_records=..., seed=...)``: write a small tree in the real format;
- ``convert(raw_dir, out, fs=..., max_quarantine_fraction=..., workers=1, ...)``: raw tree → store (``workers``:
  processes that derive the heart rates, see :class:`physiossl.data.store.EcgStoreWriter`).

Sleep-sound sources (module attribute ``KIND = "sleep"``) write sleep stores (:mod:`physiossl.data.sleep_store`)
instead: ``convert(raw_dir, out, *, features=..., channels=None, max_quarantine_fraction=..., workers=1)``, where
``features`` is the ``sleep.features`` config section; ``demo``'s ``n_records`` counts nights.

Every source runs the input checks of :mod:`._checks` (sample counts against headers, label codes against their
tables, WFDB checksums, flat leads and records, the tree against its ``SHA256SUMS.txt``, UTF-8 tables) with one
policy for what each defect leads to: quarantine or refusal, never a silent store (docs/data-quality.md).

Adding a dataset means adding one module here and a config entry.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path
from types import ModuleType


class ConversionError(RuntimeError):
    """A conversion cannot produce a trustworthy store."""


def settle_quarantine(raw_dir: Path, out: Path, entries: list[tuple[str, str]], n_total: int,
                      max_fraction: float, unit: str = "records") -> None:
    """Keep the quarantine list for the store being written (it goes into the store, and next to it as
    ``<out>.quarantine.csv`` once the store is in place); fail when more than ``max_fraction`` of the records are
    in it, leaving the list as ``<out>.refused.quarantine.csv``."""
    from ..store import pending_quarantine, write_quarantine

    fraction = len(entries) / max(n_total, 1)
    if fraction > max_fraction:
        raise refuse_with_quarantine(out, entries, f"{raw_dir}: {len(entries)} of {n_total} {unit} ({fraction:.2%}) "
                                                   f"quarantined, above the configured maximum of {max_fraction:.2%}")
    write_quarantine(pending_quarantine(out), entries)


def refuse_with_quarantine(out: Path, entries: list[tuple[str, str]], message: str) -> ConversionError:
    """The ConversionError of a refused conversion, its quarantine list written to ``<out>.refused.quarantine.csv``."""
    from ..store import refused_quarantine_path, write_quarantine

    write_quarantine(refused_quarantine_path(out), entries)
    return ConversionError(f"{message}; see {refused_quarantine_path(out)}")


def float_or_none(value) -> float | None:
    """A metadata field as a finite float; None where it is empty, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def source_kind(name: str) -> str:
    """``"ecg"`` or ``"sleep"``: which store a source writes."""
    return getattr(get_source(name), "KIND", "ecg")


def get_source(name: str) -> ModuleType:
    if name not in available():
        raise KeyError(f"unknown dataset source {name!r} (available: {available()})")
    return importlib.import_module(f"{__name__}.{name}")
