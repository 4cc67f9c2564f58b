"""What every conversion shares: the error of a conversion that cannot produce a trustworthy store, the quarantine
list and its limit, and reading numeric metadata. See :mod:`physiossl.data.sources` for the source API."""

from __future__ import annotations

import math
from pathlib import Path


class ConversionError(RuntimeError):
    """A conversion cannot produce a trustworthy store."""


def settle_quarantine(raw_dir: Path, out: Path, entries: list[tuple[str, str]], n_total: int,
                      max_fraction: float, unit: str = "records") -> None:
    """Keep the quarantine list for the store being written (it goes into the store, and next to it as
    ``<out>.quarantine.csv`` once the store is in place); fail when more than ``max_fraction`` of the records are
    in it, leaving the list as ``<out>.refused.quarantine.csv``."""
    from .store import pending_quarantine, write_quarantine

    fraction = len(entries) / max(n_total, 1)
    if fraction > max_fraction:
        raise refuse_with_quarantine(out, entries, f"{raw_dir}: {len(entries)} of {n_total} {unit} ({fraction:.2%}) "
                                                   f"quarantined, above the configured maximum of {max_fraction:.2%}")
    write_quarantine(pending_quarantine(out), entries)


def refuse_with_quarantine(out: Path, entries: list[tuple[str, str]], message: str) -> ConversionError:
    """The ConversionError of a refused conversion, its quarantine list written to ``<out>.refused.quarantine.csv``."""
    from .store import refused_quarantine_path, write_quarantine

    write_quarantine(refused_quarantine_path(out), entries)
    return ConversionError(f"{message}; see {refused_quarantine_path(out)}")


def float_or_none(value) -> float | None:
    """A metadata field as a finite float; None where it is empty, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
