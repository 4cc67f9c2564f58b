"""Shared fixtures: the real-format files of ../shared/fixtures and small demo trees and stores."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real-format fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> Path:
    """A 240-record PTB-XL-format demo tree (seeded)."""
    from physiossl.data.sources import ptbxl

    return ptbxl.demo(tmp_path_factory.mktemp("ptbxl_demo") / "raw", n_records=240, seed=1)


@pytest.fixture(scope="session")
def demo_store(demo_tree, tmp_path_factory) -> Path:
    """The demo tree converted at 100 Hz."""
    from physiossl.data.sources import ptbxl

    out = tmp_path_factory.mktemp("stores") / "ptbxl_100hz.zarr"
    ptbxl.convert(demo_tree, out, fs=100, progress=False)
    return out
