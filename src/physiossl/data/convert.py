"""What every conversion shares: the bookkeeping of the records it reads (:class:`Conversion`: progress, duplicate
ids, the quarantine list and its limit, finishing the store), the error of a conversion that cannot produce a
trustworthy store, and reading numeric metadata. See :mod:`physiossl.data.sources` for the source API."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: what a reader raises for a defective record: the record is quarantined with the message as its reason
RECORD_ERRORS = (ValueError, OSError)


class ConversionError(RuntimeError):
    """A conversion cannot produce a trustworthy store."""


class Conversion:
    """The loop every source runs, whatever it reads: each record (an ECG record, an exam, a night) is stored or
    quarantined with a reason; an id seen twice is a defect of the later record; progress is shown as records are
    taken; and the store is finished only when the quarantine stays within its limit (:func:`settle_quarantine`).

    ::

        conversion = Conversion(raw_dir, out, total=len(rows), max_fraction=0.01, desc="ptbxl", progress=True)
        with EcgStoreWriter.open(out, ...) as writer:
            for row in conversion.track(rows):
                with conversion.record(str(row.ecg_id)):     # a ValueError or OSError in here: quarantined
                    conversion.claim(str(row.ecg_id))         # a second record with this id: quarantined
                    writer.append(read(row), ...)
            conversion.finish(writer.finish, dataset=..., provenance=...)

    ``total`` counts every record of the release, also those quarantined before the loop (:meth:`quarantine`).
    """

    def __init__(self, raw_dir: Path, out: Path, total: int, *, max_fraction: float, desc: str,
                 unit: str = "records", ids: str = "record id", progress: bool = True):
        self.raw_dir, self.out = Path(raw_dir), Path(out)
        self.total, self.max_fraction, self.unit = int(total), float(max_fraction), unit
        self.desc = f"{desc} → {self.out.name}"
        self.progress = progress
        self.entries: list[tuple[str, str]] = []
        self.stored = 0
        self.ids = UniqueIds(ids)

    def track(self, items: Iterable[T], total: int | None = None) -> Iterator[T]:
        """``items`` with a progress bar (``total``: their number, when ``items`` has no length)."""
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=self.desc, unit=self.unit, disable=not self.progress)

    def quarantine(self, record: str, reason: str) -> None:
        """Put ``record`` in the quarantine list with ``reason``."""
        log.debug("%s: quarantined %s: %s", self.desc, record, reason)
        self.entries.append((str(record), str(reason)))

    def record(self, record: str) -> "_Record":
        """A block that reads and stores ``record``: a :data:`RECORD_ERRORS` exception raised in it quarantines the
        record with its message and the loop goes on; other exceptions stop the conversion."""
        return _Record(self, str(record))

    def claim(self, record_id: str, where: str | None = None) -> None:
        """:meth:`UniqueIds.claim` on the conversion's ids (called in a :meth:`record` block)."""
        self.ids.claim(record_id, where)

    @property
    def quarantined(self) -> int:
        return len(self.entries)

    def finish(self, finish_store: Callable[..., Any], *args, **kwargs) -> Any:
        """Check the quarantine limit (:func:`settle_quarantine`, which refuses the store above it), then finish the
        store with ``finish_store(*args, **kwargs)`` (the writer's ``finish``)."""
        settle_quarantine(self.raw_dir, self.out, self.entries, self.total, self.max_fraction, unit=self.unit)
        result = finish_store(*args, **kwargs)
        log.info("%s: %d %s stored, %d quarantined", self.desc, self.stored, self.unit, self.quarantined)
        return result

    def summary(self, **extra) -> dict:
        """What an ECG conversion returns: records stored and quarantined, the store, and ``extra``."""
        return {"records": self.stored, "quarantined": self.quarantined, **extra, "store": str(self.out)}


class UniqueIds:
    """The ids of a release's records so far, ``what`` naming them (``"ecg_id"``, ``"record name"``): a second record
    with an id is a defect of that record (whatever became of the first), never a silent overwrite."""

    def __init__(self, what: str):
        self.what = what
        self.first: dict[str, str | None] = {}

    def claim(self, record_id: str, where: str | None = None) -> None:
        """Take ``record_id`` of the record at ``where`` (a path, a table row); when it is taken, ValueError naming
        both places."""
        record_id = str(record_id)
        if record_id in self.first:
            here, first = f" at {where}" if where else "", self.first[record_id]
            raise ValueError(f"duplicate {self.what} {record_id}{here}" + (f" (first at {first})" if first else ""))
        self.first[record_id] = where


class _Record:
    def __init__(self, conversion: Conversion, record: str):
        self.conversion, self.id = conversion, record

    def __enter__(self) -> "_Record":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.conversion.stored += 1
            return False
        if isinstance(exc, RECORD_ERRORS):
            self.conversion.quarantine(self.id, str(exc))
            return True
        return False


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
