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


class FakeHost:
    """A localhost stand-in for a data host's API and file server. ``json(path, doc)`` answers ``path`` (any
    query) with ``doc``, or with ``doc(query)`` when it is a function of the parsed query; ``file(path, data)``
    serves bytes and returns the URL. ``fault[path]`` makes one file misbehave the way real hosts do:
    ``"html"`` (HTTP 200 with an HTML error page), ``"truncated"`` (a shorter body, Content-Length to match),
    ``"altered"`` (other bytes of the same size)."""

    def __init__(self, base: str):
        self.base, self.routes, self.fault, self.requests = base, {}, {}, []

    def json(self, path: str, doc) -> str:
        self.routes[path] = ("json", doc)
        return f"{self.base}{path}"

    def file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (which may carry ``?fileId=<id>``, routed on that id as Science Data Bank's
        download server does)."""
        from urllib.parse import quote
        self.routes[path] = ("file", data)
        return f"{self.base}{quote(path, safe='/[]?=')}"

    def redirect(self, path: str, location: str) -> str:
        self.routes[path] = ("redirect", location)
        return f"{self.base}{path}"

    def answer(self, path: str, query: dict) -> tuple[int, str, bytes]:
        import json as _json
        if "fileId" in query:
            path = f"{path}?fileId={query['fileId'][0]}"
        self.requests.append(path)
        kind, value = self.routes.get(path, (None, None))
        if kind is None:
            return 404, "text/plain", b"not found"
        if kind == "redirect":
            return 302, value, b""
        if kind == "json":
            return 200, "application/json", _json.dumps(value(query) if callable(value) else value).encode()
        fault = self.fault.get(path)
        if fault == "html":
            return 200, "text/html; charset=utf-8", b"<!DOCTYPE html><html><body>Service busy</body></html>"
        if fault == "truncated":
            return 200, "application/octet-stream", value[: len(value) // 2]
        if fault == "altered":
            return 200, "application/octet-stream", bytes(b ^ 0xFF for b in value[:16]) + value[16:]
        return 200, "application/octet-stream", value


@pytest.fixture
def fake_host():
    """A :class:`FakeHost` on a localhost port, stopped after the test."""
    from urllib.parse import parse_qs, unquote, urlsplit

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            status, ctype, body = host.answer(unquote(parts.path), parse_qs(parts.query))
            self.send_response(status)
            self.send_header("Location" if status == 302 else "Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host = FakeHost(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
