"""Shared fixtures: the real-format files of ../shared/fixtures, small demo trees and stores, and a localhost
static HTTP server. Shared plain functions are in helpers.py."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# helpers.py holds shared assert_* functions: give them pytest's assertion messages too (conftest is imported
# before the test modules that import helpers)
pytest.register_assert_rewrite("helpers")

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


@pytest.fixture
def http_dir(tmp_path):
    """A static HTTP server on localhost over a fresh directory: yields (directory, base URL without a slash)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
