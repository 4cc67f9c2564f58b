"""Tests for physiossl.data.fetch against a local (127.0.0.1) HTTP server."""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import leftovers
from physiossl.data import fetch
from physiossl.data.fetch import (
    DownloadError,
    download_file,
    fetch_archive_tree,
    safe_extract_zip,
    verify_sha256sums,
)

FIXTURE_TREE = Path(__file__).resolve().parent / "fixtures" / "ptbxl"
TOP = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
ARCHIVE_NAME = f"{TOP}.zip"
CORRUPTED_REL = "records100/00000/00002_lr.dat"

if not (FIXTURE_TREE / "SHA256SUMS.txt").is_file():
    pytest.fail(
        f"PTB-XL fixture tree not found at {FIXTURE_TREE}: the fixtures are part of the repository "
        "(tests/fixtures, see tests/fixtures/PROVENANCE.md); restore them from git",
        pytrace=False,
    )


# --------------------------------------------------------------------------- server


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; plus a log of requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # bytes of body sent before dropping the connection
    cut_requests: int = 0  # ... for this many GET responses
    ignore_range: bool = False
    corrupt: bool = False  # flip one byte in the middle of served bodies
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _gets: int = 0

    def gets(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET"]

    def bytes_served(self) -> int:
        return sum(r["sent"] for r in self.requests)


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        entry = {
            "method": self.command,
            "path": self.path,
            "range": self.headers.get("Range"),
            "status": None,
            "sent": 0,
        }
        with state.lock:
            state.requests.append(entry)
            cut = False
            if not head:
                state._gets += 1
                cut = state.cut_after is not None and state._gets <= state.cut_requests

        data = state.files.get(self.path)
        if data is None:
            entry["status"] = 404
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if state.corrupt:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]

        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not state.ignore_range and not head:
            match = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            assert match, f"unexpected Range header {rng!r}"
            start = int(match.group(1))
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206

        body = data[start:]
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if cut:
            # Announce the full length, send only part of it, then hang up.
            partial = body[: state.cut_after]
            self.wfile.write(partial)
            self.wfile.flush()
            entry["sent"] = len(partial)
            self.close_connection = True
            return
        self.wfile.write(body)
        entry["sent"] = len(body)


@dataclass
class Server:
    base_url: str
    state: ServerState

    def serve(self, name: str, data: bytes) -> str:
        self.state.files[f"/{name}"] = data
        return f"{self.base_url}/{name}"


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield Server(f"http://{host}:{port}", httpd.state)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(fetch, "RETRY_BACKOFF_S", 0.0)


# --------------------------------------------------------------------------- archives


def fixture_files(tree: Path = FIXTURE_TREE) -> dict[str, bytes]:
    return {
        p.relative_to(tree).as_posix(): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file()
    }


def make_zip(files: dict[str, bytes], path: Path, top: str | None = TOP) -> bytes:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if top:
            zf.writestr(f"{top}/", b"")
        for rel, data in files.items():
            zf.writestr(f"{top}/{rel}" if top else rel, data)
    return path.read_bytes()


@pytest.fixture
def archive_bytes(tmp_path) -> bytes:
    return make_zip(fixture_files(), tmp_path / "build.zip")


def sums_count() -> int:
    text = (FIXTURE_TREE / "SHA256SUMS.txt").read_text()
    return sum(1 for line in text.splitlines() if line.strip())


def assert_tree_matches_fixtures(out: Path) -> None:
    expected = fixture_files()
    got = fixture_files(out)
    assert sorted(got) == sorted(expected)
    for rel, data in expected.items():
        assert got[rel] == data, f"{rel} differs from the fixture"


# --------------------------------------------------------------------------- tests


def test_fetch_archive_tree_full(server, archive_bytes, tmp_path):
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    out = tmp_path / "data" / "ptbxl"

    assert fetch_archive_tree(url, out, progress=False) == out

    assert_tree_matches_fixtures(out)
    assert verify_sha256sums(out) == sums_count() == 13
    assert (tmp_path / "data" / ".downloads" / ARCHIVE_NAME).read_bytes() == archive_bytes
    assert not leftovers(tmp_path / "data")
    assert [r["range"] for r in server.state.gets()] == [None]


def test_fetch_archive_tree_replaces_existing_out_dir(server, archive_bytes, tmp_path):
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    out = tmp_path / "ptbxl"
    out.mkdir()
    (out / "stale.txt").write_text("old")

    fetch_archive_tree(url, out, progress=False)

    assert not (out / "stale.txt").exists()
    assert_tree_matches_fixtures(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "build.zip", "ptbxl"]


def test_truncated_transfer_resumes_with_range(server, archive_bytes, tmp_path):
    size = len(archive_bytes)
    cut = size // 3
    server.state.cut_after = cut
    server.state.cut_requests = 2
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    out = tmp_path / "ptbxl"

    fetch_archive_tree(url, out, progress=False, chunk_size=16 * 1024)

    assert_tree_matches_fixtures(out)
    gets = server.state.gets()
    assert [g["range"] for g in gets] == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert [g["status"] for g in gets] == [200, 206, 206]
    offsets = [int(re.fullmatch(r"bytes=(\d+)-", g["range"]).group(1)) for g in gets[1:]]
    assert all(n > 0 for n in offsets)
    assert server.state.bytes_served() < 2 * size
    assert server.state.bytes_served() == size


def test_truncated_transfer_gives_up_but_keeps_part(server, archive_bytes, tmp_path):
    size = len(archive_bytes)
    server.state.cut_after = size // 10
    server.state.cut_requests = 100
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    dest = tmp_path / ARCHIVE_NAME

    with pytest.raises(DownloadError, match="giving up") as info:
        download_file(url, dest, max_retries=2, progress=False)

    assert url in str(info.value)
    assert len(server.state.gets()) == 3
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists()
    assert part.read_bytes() == archive_bytes[: 3 * (size // 10)]


def test_existing_part_file_is_resumed(server, archive_bytes, tmp_path):
    size = len(archive_bytes)
    half = size // 2
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / f"{ARCHIVE_NAME}.part").write_bytes(archive_bytes[:half])
    out = tmp_path / "ptbxl"

    digest = hashlib.sha256(archive_bytes).hexdigest()
    fetch_archive_tree(url, out, progress=False, archive_sha256=digest)

    assert_tree_matches_fixtures(out)
    gets = server.state.gets()
    assert [(g["range"], g["status"]) for g in gets] == [(f"bytes={half}-", 206)]
    assert server.state.bytes_served() == size - half
    assert not (downloads / f"{ARCHIVE_NAME}.part").exists()


def test_complete_part_file_answered_416(server, archive_bytes, tmp_path):
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    dest = tmp_path / ARCHIVE_NAME
    dest.with_name(dest.name + ".part").write_bytes(archive_bytes)

    download_file(url, dest, progress=False)

    assert dest.read_bytes() == archive_bytes
    assert [(g["range"], g["status"]) for g in server.state.gets()] == [
        (f"bytes={len(archive_bytes)}-", 416)
    ]


def test_server_ignoring_range_restarts_from_zero(server, archive_bytes, tmp_path):
    server.state.ignore_range = True
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    dest = tmp_path / ARCHIVE_NAME
    # Garbage of the right kind of length: appending to it would corrupt the result.
    dest.with_name(dest.name + ".part").write_bytes(b"\x00" * (len(archive_bytes) // 2))

    download_file(url, dest, expected_sha256=hashlib.sha256(archive_bytes).hexdigest(),
                  progress=False)

    assert dest.read_bytes() == archive_bytes
    gets = server.state.gets()
    assert len(gets) == 1 and gets[0]["range"] is not None and gets[0]["status"] == 200


def test_existing_dest_is_not_downloaded_again(server, archive_bytes, tmp_path):
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    dest = tmp_path / ARCHIVE_NAME
    dest.write_bytes(archive_bytes)

    download_file(url, dest, expected_sha256=hashlib.sha256(archive_bytes).hexdigest(),
                  progress=False)
    assert server.state.requests == []

    dest.write_bytes(b"stale")  # wrong hash -> fetched again
    download_file(url, dest, expected_sha256=hashlib.sha256(archive_bytes).hexdigest(),
                  progress=False)
    assert dest.read_bytes() == archive_bytes
    assert len(server.state.gets()) == 1


def test_corrupted_file_in_archive_is_reported(server, tmp_path):
    files = fixture_files()
    data = bytearray(files[CORRUPTED_REL])
    data[len(data) // 2] ^= 0xFF
    files[CORRUPTED_REL] = bytes(data)
    url = server.serve(ARCHIVE_NAME, make_zip(files, tmp_path / "bad.zip"))
    parent = tmp_path / "data"
    out = parent / "ptbxl"

    with pytest.raises(DownloadError) as info:
        fetch_archive_tree(url, out, progress=False)

    message = str(info.value)
    assert CORRUPTED_REL in message
    assert "SHA256SUMS.txt" in message
    blamed = [rel for rel in files if rel != "SHA256SUMS.txt" and rel in message]
    assert blamed == [CORRUPTED_REL]  # only the damaged file is blamed
    assert not out.exists()
    assert not leftovers(parent)


def test_failed_fetch_keeps_existing_out_dir(server, tmp_path):
    files = fixture_files()
    files[CORRUPTED_REL] = b"damaged"
    url = server.serve(ARCHIVE_NAME, make_zip(files, tmp_path / "bad.zip"))
    out = tmp_path / "ptbxl"
    out.mkdir()
    (out / "keep.txt").write_text("previous good copy")

    with pytest.raises(DownloadError, match=re.escape(CORRUPTED_REL)):
        fetch_archive_tree(url, out, progress=False)

    assert (out / "keep.txt").read_text() == "previous good copy"
    assert not leftovers(tmp_path)


def test_download_sha256_mismatch(server, archive_bytes, tmp_path):
    server.state.corrupt = True
    url = server.serve(ARCHIVE_NAME, archive_bytes)
    dest = tmp_path / ARCHIVE_NAME
    expected = hashlib.sha256(archive_bytes).hexdigest()

    with pytest.raises(DownloadError) as info:
        download_file(url, dest, expected_sha256=expected, progress=False)

    message = str(info.value)
    assert ARCHIVE_NAME in message and expected in message
    served = bytearray(archive_bytes)
    served[len(served) // 2] ^= 0xFF
    assert hashlib.sha256(served).hexdigest() in message
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_http_404_is_not_retried(server, tmp_path):
    url = f"{server.base_url}/missing.zip"
    with pytest.raises(DownloadError, match="404") as info:
        download_file(url, tmp_path / "missing.zip", progress=False)
    assert url in str(info.value)
    assert len(server.state.gets()) == 1


def test_zip_member_with_parent_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", b"fine")
        zf.writestr(zipfile.ZipInfo("../evil.txt"), b"pwned")
    target = tmp_path / "sub" / "target"

    with pytest.raises(DownloadError, match=re.escape("../evil.txt")):
        safe_extract_zip(archive, target)

    assert not (tmp_path / "sub" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not target.exists() or not any(target.iterdir())


def test_zip_member_with_absolute_path_is_refused(tmp_path):
    victim = tmp_path / "outside" / "abs.txt"
    archive = tmp_path / "abs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo(victim.as_posix()), b"pwned")
    target = tmp_path / "target"

    with pytest.raises(DownloadError, match="absolute") as info:
        safe_extract_zip(archive, target)

    assert victim.as_posix() in str(info.value)
    assert not victim.exists()
    assert not target.exists() or not any(target.rglob("*"))


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(DownloadError, match="symlink"):
        safe_extract_zip(archive, tmp_path / "target")
    assert not (tmp_path / "target" / "link").exists()


def test_safe_extract_returns_files(tmp_path, archive_bytes):
    archive = tmp_path / "ok.zip"
    archive.write_bytes(archive_bytes)
    paths = safe_extract_zip(archive, tmp_path / "target")
    assert sorted(p.relative_to((tmp_path / "target").resolve() / TOP).as_posix()
                  for p in paths) == sorted(fixture_files())


def test_not_a_zip_is_reported(server, tmp_path):
    url = server.serve(ARCHIVE_NAME, b"<html>503 Service Unavailable</html>")
    parent = tmp_path / "data"
    out = parent / "ptbxl"
    archive = parent / ".downloads" / ARCHIVE_NAME

    with pytest.raises(DownloadError) as info:
        fetch_archive_tree(url, out, progress=False)

    # an HTML error page answered with status 200 is refused before anything is written
    assert ARCHIVE_NAME in str(info.value) and "HTML page" in str(info.value) and "rerun" in str(info.value)
    assert not out.exists()
    assert not leftovers(parent)
    assert not archive.exists()  # a bogus cached archive is not reused by a rerun

    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"definitely not a zip")
    with pytest.raises(DownloadError, match=re.escape(str(bogus))):
        safe_extract_zip(bogus, tmp_path / "target")


def test_missing_sha256sums(server, tmp_path):
    files = {k: v for k, v in fixture_files().items() if k != "SHA256SUMS.txt"}
    url = server.serve(ARCHIVE_NAME, make_zip(files, tmp_path / "nosums.zip"))
    out = tmp_path / "data" / "ptbxl"

    with pytest.raises(DownloadError, match="SHA256SUMS.txt"):
        fetch_archive_tree(url, out, progress=False)
    assert not out.exists()
    assert not leftovers(out.parent)

    # Verification can be switched off explicitly.
    fetch_archive_tree(url, out, sums_file=None, progress=False)
    assert (out / CORRUPTED_REL).read_bytes() == (FIXTURE_TREE / CORRUPTED_REL).read_bytes()

    with pytest.raises(DownloadError, match="not found"):
        verify_sha256sums(out)


def test_verify_sha256sums_reports_missing_and_binary_marker(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(FIXTURE_TREE, root)
    sums = (root / "SHA256SUMS.txt").read_text().splitlines()
    # Binary-mode marker is accepted.
    (root / "SHA256SUMS.txt").write_text(
        "\n".join(line.replace("  ", " *", 1) for line in sums) + "\n"
    )
    assert verify_sha256sums(root) == len(sums)

    (root / CORRUPTED_REL).unlink()
    with pytest.raises(DownloadError) as info:
        verify_sha256sums(root)
    assert CORRUPTED_REL in str(info.value) and "missing" in str(info.value)


def test_verify_sha256sums_refuses_paths_outside_the_tree(tmp_path):
    """A listed path that leads out of the tree (``..``, absolute, a symlinked file or folder) is a problem named in
    the error, even when its hash matches; files inside the tree (through a symlink inside it too) verify."""
    root, outside = tmp_path / "tree", tmp_path / "elsewhere"
    (root / "records").mkdir(parents=True)
    outside.mkdir()
    data = b"samples"
    digest = hashlib.sha256(data).hexdigest()
    for folder in (root / "records", outside):
        (folder / "a.dat").write_bytes(data)
    (root / "records" / "inside.dat").symlink_to(root / "records" / "a.dat")
    (root / "records" / "out.dat").symlink_to(outside / "a.dat")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    inside = ["records/a.dat", "records/inside.dat", "records/../records/a.dat"]
    escaping = ["../elsewhere/a.dat", "records/out.dat", "linked/a.dat", (outside / "a.dat").as_posix()]
    (root / "SHA256SUMS.txt").write_text("".join(f"{digest}  {rel}\n" for rel in inside))
    assert verify_sha256sums(root) == len(inside)

    (root / "SHA256SUMS.txt").write_text("".join(f"{digest}  {rel}\n" for rel in inside + escaping))
    with pytest.raises(DownloadError) as info:
        verify_sha256sums(root)
    message = str(info.value)
    assert f"{len(escaping)} of {len(inside) + len(escaping)} files failed" in message
    assert all(f"{rel}: path lies outside" in message for rel in escaping)


def test_verify_sha256sums_skips_folders_it_is_told_to(tmp_path):
    """Listed files under a skipped folder (written with or without a leading ./) are neither checked nor counted."""
    root = tmp_path / "tree"
    for rel in ("records100/a.dat", "records500/b.dat", "records500/c.dat"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    good, bad = hashlib.sha256(b"x").hexdigest(), "0" * 64
    (root / "SHA256SUMS.txt").write_text(
        f"{good}  records100/a.dat\n{bad}  records500/b.dat\n{bad}  ./records500/c.dat\n")
    assert verify_sha256sums(root, skip=("records500/",)) == 1
    with pytest.raises(DownloadError, match="2 of 3 files failed"):
        verify_sha256sums(root)


def test_cli_download_then_convert_ptbxl(server, tmp_path, capsys):
    """`physiossl download ptbxl` through a truncated transfer, then `physiossl convert` of the tree."""
    from physiossl.cli import main
    from physiossl.data.ecg.store import open_store

    archive = make_zip(fixture_files(), tmp_path / "build.zip")
    url = server.serve(ARCHIVE_NAME, archive)
    server.state.cut_after, server.state.cut_requests = len(archive) // 2, 1
    raw = tmp_path / "data" / "raw" / "ptbxl"
    assert main(["download", "ptbxl", "--out", str(raw), "--url", url, "--no-progress"]) == 0
    assert_tree_matches_fixtures(raw)
    assert any(r["range"] for r in server.state.gets())
    store = tmp_path / "data" / "stores" / "ptbxl_100hz.zarr"
    assert main(["convert", "ptbxl", "--raw", str(raw), "--out", str(store), "--max-quarantine", "0"]) == 0
    assert open_store(store).attrs["n_records"] == 3
    capsys.readouterr()

    url = server.serve("broken.zip", b"this is not a zip archive")
    assert main(["download", "ptbxl", "--out", str(tmp_path / "other"), "--url", url, "--no-progress"]) == 1
    assert "broken.zip" in capsys.readouterr().err


@pytest.mark.parametrize("fault, words", [
    ("altered", "sha256 mismatch"),          # a file of the tree differs from PhysioNet's SHA256SUMS.txt
    ("truncated", "not a valid zip"),         # the archive's body ends early (Content-Length to match)
    ("html", "HTML page"),                    # an error page answered with status 200
])
def test_physionet_downloads_refuse_what_sha256sums_does_not_vouch_for(fake_host, tmp_path, fault, words):
    """PTB-XL's download (CinC 2020 and Chapman's WFDB release use the same path) against PhysioNet's shape: the
    project zip with SHA256SUMS.txt inside. Each defect is refused naming the file, nothing is installed, and the
    repaired host then installs the tree."""
    from physiossl.data.ecg.sources import ptbxl

    files = fixture_files()
    good = make_zip(files, tmp_path / "good.zip")
    if fault == "altered":
        files = {**files, CORRUPTED_REL: b"\0" + files[CORRUPTED_REL][1:]}
        url = fake_host.file(f"/files/{ARCHIVE_NAME}", make_zip(files, tmp_path / "bad.zip"))
    else:
        url = fake_host.file(f"/files/{ARCHIVE_NAME}", good)
        fake_host.fault[f"/files/{ARCHIVE_NAME}"] = fault
    out = tmp_path / "data" / "ptbxl"
    with pytest.raises(DownloadError, match=words) as info:
        ptbxl.download(out, url=url, progress=False)
    assert (CORRUPTED_REL if fault == "altered" else ARCHIVE_NAME) in str(info.value)
    assert not out.exists() and not leftovers(out.parent)
    assert not (out.parent / ".downloads" / ARCHIVE_NAME).exists()     # a rerun fetches the archive again
    fake_host.file(f"/files/{ARCHIVE_NAME}", good)
    fake_host.fault.clear()
    assert ptbxl.download(out, url=url, progress=False) == out
    assert_tree_matches_fixtures(out)
