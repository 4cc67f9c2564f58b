"""Dataset sources. Each module ``<name>.py`` offers the same API:

- ``download(out_dir, url=..., progress=True)``: fetch and verify the raw tree;
- ``demo(out_dir, n_records=..., seed=...)``: write a small tree in the real format;
- ``convert(raw_dir, out, fs=..., max_quarantine_fraction=..., ...)``: raw tree → store.

Adding a dataset means adding one module here and a config entry.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


class ConversionError(RuntimeError):
    """A conversion cannot produce a trustworthy store."""


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_source(name: str) -> ModuleType:
    if name not in available():
        raise KeyError(f"unknown dataset source {name!r} (available: {available()})")
    return importlib.import_module(f"{__name__}.{name}")
