"""Shared fixtures: the real-format files of tests/fixtures (part of the repository; see tests/fixtures/PROVENANCE.md,
and a test that needs one fails, never skips, when it is missing), small demo trees and stores, and a localhost
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

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _listed_fixture_files() -> list[str]:
    """Every file named in the SHA-256 lists of PROVENANCE.md and ptbxl/SHA256SUMS.txt, relative to FIXTURES."""
    import re
    line = re.compile(r"^[0-9a-f]{64}\s+(?:\d+\s+)?\*?(\S.*?)\s*$")
    listings = {"PROVENANCE.md": "", "ptbxl/SHA256SUMS.txt": "ptbxl/"}   # listing -> folder its paths are in
    names = list(listings)
    for listing, folder in listings.items():
        if (FIXTURES / listing).is_file():
            names += [folder + m.group(1) for m in map(line.match, (FIXTURES / listing).read_text().splitlines()) if m]
    return sorted(set(names))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """The real-format fixture folder. Fails (never skips) when it, or a file listed in its PROVENANCE.md or
    ptbxl/SHA256SUMS.txt, is missing: the fixtures are part of the repository."""
    if not FIXTURES.is_dir():
        pytest.fail(f"real-format fixtures not found at {FIXTURES}: they are part of the repository "
                    "(tests/fixtures, see tests/fixtures/PROVENANCE.md); restore them from git", pytrace=False)
    missing = [name for name in _listed_fixture_files() if not (FIXTURES / name).is_file()]
    if missing:
        pytest.fail(f"fixture files missing under {FIXTURES}: {', '.join(missing)}; they are part of the repository "
                    "(see tests/fixtures/PROVENANCE.md); restore them from git", pytrace=False)
    return FIXTURES


@pytest.fixture(scope="session")
def demo_tree(tmp_path_factory) -> Path:
    """A 240-record PTB-XL-format demo tree (seeded)."""
    from physiossl.data.ecg.sources import ptbxl

    return ptbxl.demo(tmp_path_factory.mktemp("ptbxl_demo") / "raw", n_records=240, seed=1)


@pytest.fixture(scope="session")
def demo_store(demo_tree, tmp_path_factory) -> Path:
    """The demo tree converted at 100 Hz."""
    from physiossl.data.ecg.sources import ptbxl

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


# ------------------------------------------------------------------------------------- fault-injection table
def pytest_addoption(parser):
    parser.addoption("--fault-table", metavar="PATH",
                     help="write the outcome of every fault-injection case that ran (the `fault` fixture) to PATH "
                          "as a Markdown table")


def pytest_collection_modifyitems(config, items):
    for item in items:   # `-m fault_case` selects every fault-injection case, the `faults` ones included
        if "fault" in getattr(item, "fixturenames", ()):
            item.add_marker("fault_case")


@pytest.fixture
def fault(request):
    """``fault(area, case, outcome)`` records what a fault-injection case ended in, as the test has just asserted
    it: its row of the table that ``--fault-table`` writes. ``outcome`` starts with one of :data:`OUTCOMES`."""

    def record(area: str, case: str, outcome: str) -> None:
        if not outcome.startswith(OUTCOMES):
            raise ValueError(f"outcome {outcome!r} must start with one of {OUTCOMES}")
        request.node.user_properties.append(("fault", {"area": area, "case": case, "outcome": outcome}))

    return record


#: what a fault can end in; "silently accepted" is not among them: a test that sees it fails
OUTCOMES = ("refused", "quarantined", "resumed identical", "recovered", "identical", "started afresh")
_FAULT_ROWS: list[dict] = []


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for key, row in report.user_properties:
        if key == "fault":
            _FAULT_ROWS.append({**row, "test": report.nodeid.split("::", 1)[-1],
                                "passed": report.passed})


def pytest_sessionfinish(session):
    path = session.config.getoption("--fault-table")
    if not path or hasattr(session.config, "workerinput"):   # under xdist the controller writes it
        return
    rows = sorted(_FAULT_ROWS, key=lambda r: (r["area"], r["case"]))
    failed = [r for r in rows if not r["passed"]]
    import os
    import platform

    import torch

    silent = "silently accepted: 0 (a case whose outcome is not one of " + ", ".join(OUTCOMES) + " fails its test)"
    lines = ["# Fault injection", "",
             "Every case injects one fault through the real command-line or Snakemake path and asserts the outcome "
             "in the table. Written by `bash scripts/test.sh -m fault_case --fault-table docs/faults.md` on "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
             f"{torch.__version__}.", "",
             f"{len(rows)} cases: {len(rows) - len(failed)} passed, {len(failed)} failed; {silent}. Resumed runs: "
             f"{sum(r['outcome'].startswith('resumed identical') for r in rows if r['passed'])}, all identical to "
             "uninterrupted runs.", "",
             "| area | fault | outcome | test |", "|---|---|---|---|"]
    lines += [f"| {r['area']} | {r['case']} | {r['outcome'] if r['passed'] else 'FAILED'} | `{r['test']}` |"
              for r in rows]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
