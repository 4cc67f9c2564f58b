"""Dataset sources by name (:mod:`physiossl.registry`). A source is a module of :mod:`physiossl.data.ecg.sources`
(it writes ``physiossl.ecg/1`` stores) or :mod:`physiossl.data.sleep.sources` (``physiossl.sleep/1`` stores) whose
``convert`` function is declared with ``@register("name")``, and which offers the API of :class:`Source`. Adding a
dataset means adding one module there and a config entry; every source runs the input checks of
:mod:`physiossl.data.checks` and the conversion helpers of :mod:`physiossl.data.convert`.

Listing sources, their modality and their demo options imports none of them (nor numpy, scipy or wfdb).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Protocol

from ..registry import Registry

SOURCES = Registry("source", "physiossl.data.ecg.sources", "physiossl.data.sleep.sources", label="dataset source")
register = SOURCES.register
#: ``demo()`` arguments the command line gives, never ``datasets.<name>.demo.options``
DEMO_FIXED = ("out_dir", "n_records", "seed")


class Source(Protocol):
    """The API of a source module.

    - ``download(out_dir, url=..., progress=True, ...)``: fetch and verify the raw tree, return its folder;
    - ``demo(out_dir, n_records=..., seed=..., **options)``: write a small tree in the real format (for sleep
      sources ``n_records`` counts nights); ``options`` come from ``datasets.<name>.demo.options``;
    - ``convert(raw_dir, out, ...)``: raw tree → store, atomically. ECG sources take ``fs``,
      ``max_quarantine_fraction`` and ``workers`` (processes that derive the heart rates, see
      :class:`physiossl.data.ecg.store.EcgStoreWriter`); sleep sources take ``features`` (the ``sleep.features``
      config section), ``channels``, ``max_quarantine_fraction`` and ``workers``.
    """

    def download(self, out_dir: Path, url: str = ..., progress: bool = True) -> Path: ...

    def demo(self, out_dir: Path, n_records: int = ..., seed: int = 0) -> Path: ...

    def convert(self, raw_dir: Path, out: Path, **settings) -> Path: ...


def available() -> list[str]:
    return SOURCES.names()


def source_kind(name: str) -> str:
    """``"ecg"`` or ``"sleep"``: which store a source writes (the package it lives in)."""
    return "sleep" if SOURCES[name].module.startswith("physiossl.data.sleep.") else "ecg"


def get_source(name: str) -> ModuleType:
    """The module of source ``name`` (imports it)."""
    import importlib

    return importlib.import_module(SOURCES[name].module)


def demo_options(name: str) -> list[str]:
    """The options a config may pass to source ``name``'s ``demo()`` (read from its source, not imported)."""
    from ..registry import function_params

    return [p for p in function_params(SOURCES[name].module, "demo") if p not in DEMO_FIXED]


__all__ = ["DEMO_FIXED", "SOURCES", "Source", "available", "demo_options", "get_source", "register",
           "source_kind"]
