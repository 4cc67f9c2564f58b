"""Fault injection for the data stages and the stores: what a killed download or conversion, a bad cached archive, a
damaged store, shell characters in config values and a full disk leave behind, and what the next run makes of it,
through the `physiossl` command line and through Snakemake on a tiny project.

Every case records what it verified with the ``fault`` fixture; the table of every case of the suite:
``bash scripts/test.sh -m fault_case --fault-table docs/faults.md``. The cases that kill commands or run Snakemake
pipelines or training are marked ``faults`` (left out by default; ``-m faults`` runs them)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml

from helpers import copy_tree
from physiossl.cli import main
from physiossl.data import fetch
from physiossl.data.ecg.store import open_store
from physiossl.data.files import _HOST, MANIFEST
from physiossl.data.store import StoreError, quarantine_path
from test_workflow import BIN, make_project, snakemake, tiny_config

REPO = Path(__file__).resolve().parents[1]
PHYSIOSSL = str(BIN / "physiossl")
TOP = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
ARCHIVE = f"{TOP}.zip"
PIECE = 64 * 1024   # bytes the test server sends at a time


# --------------------------------------------------------------------------------------------- a host with Range
@dataclass
class HostState:
    files: dict[str, bytes] = field(default_factory=dict)
    throttle: float = 0.0                                   # seconds between the pieces of a body
    gets: list[str | None] = field(default_factory=list)    # the Range header of every GET (None: the whole file)


class RangeHandler(BaseHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` (what PhysioNet's server answers), optionally slow; the query string
    is ignored."""

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        state: HostState = self.server.state  # type: ignore[attr-defined]
        data = state.files.get(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        if body:
            state.gets.append(rng)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", rng.strip()).group(1)) if rng else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        try:
            for i in range(start, len(data), PIECE):
                self.wfile.write(data[i:i + PIECE])
                if state.throttle:
                    self.wfile.flush()
                    time.sleep(state.throttle)
        except (BrokenPipeError, ConnectionResetError):   # the client was killed
            pass


@dataclass
class Host:
    base: str
    state: HostState

    def serve(self, path: str, data: bytes, query: str = "") -> str:
        self.state.files[path] = data
        return f"{self.base}{path}{query}"


@pytest.fixture
def host():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.daemon_threads = True
    server.state = HostState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Host(f"http://127.0.0.1:{server.server_address[1]}", server.state)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------- archives and trees
def ptbxl_files(fixtures: Path, padding: int = 0) -> dict[str, bytes]:
    """The real PTB-XL files of tests/fixtures, with ``padding`` random bytes in one more file (listed in
    SHA256SUMS.txt) to make the archive as large as a transfer that can be killed half way needs."""
    root = fixtures / "ptbxl"
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if padding:
        extra = np.random.default_rng(0).bytes(padding)
        files["records500/padding.bin"] = extra
        files["SHA256SUMS.txt"] += f"{hashlib.sha256(extra).hexdigest()}  records500/padding.bin\n".encode()
    return files


def make_zip(files: dict[str, bytes], top: str | None = TOP) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            method = zipfile.ZIP_STORED if rel.endswith(".bin") else zipfile.ZIP_DEFLATED
            zf.writestr(f"{top}/{rel}" if top else rel, data, compress_type=method)
    return buffer.getvalue()


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def files_digest(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(files.items())}


def store_digest(store: Path) -> tuple[dict, dict, bytes]:
    """What two conversions of the same tree must agree on: every file's SHA-256 in the manifest (checked against
    the files first), the root attributes but the creation time, and the quarantine list published beside it."""
    assert main(["verify-store", str(store)]) == 0
    files = json.loads((store / MANIFEST).read_text())["files"]
    attrs = json.loads((store / "zarr.json").read_text())
    attrs["attributes"].pop("created_at")
    return ({name: entry["sha256"] for name, entry in files.items() if name != "zarr.json"}, attrs,
            quarantine_path(store).read_bytes())


def staging(directory: Path) -> list[str]:
    """Temporary and partial entries a writer leaves in ``directory`` (and its .downloads/ folder)."""
    directory = Path(directory)
    found = [p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    if (directory / ".downloads").is_dir():
        found += [f".downloads/{p.name}" for p in (directory / ".downloads").iterdir()
                  if p.name.endswith(".part") or ".tmp-" in p.name]
    return found


def dead_pid() -> int:
    """The pid of a process that has ended, as that of a writer killed with kill -9."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------------------------- killing processes
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
           MKL_NUM_THREADS="1")


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``cmd`` in a process group of its own (killed as a whole, as Slurm or a user's kill -9 of a job does);
    output to ``log`` (a pipe nobody reads could fill and stall it)."""
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 300) -> None:
    """kill -9 the process group of ``proc`` as soon as ``ready()`` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before the fault could be injected:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the fault's moment did not come within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def temporaries(directory: Path, name: str) -> list[Path]:
    return sorted(Path(directory).glob(f".{name}.tmp-*")) if Path(directory).is_dir() else []


def rerun_after_kill(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Rerun a Snakemake command whose process group was killed with kill -9: the same command is refused while the
    lock of the killed run remains, and the message names `--unlock`; after `snakemake --unlock` the same command
    runs (rerunning the incomplete job: --rerun-incomplete is in profiles/default)."""
    refused = snakemake(project, *args, check=False)
    assert refused.returncode != 0 and "--unlock" in refused.stdout + refused.stderr, refused.stderr[-3000:]
    snakemake(project, "--unlock")
    return snakemake(project, *args)


# ============================================================================================= 1. killed download
def test_download_resumes_a_killed_transfer_and_removes_dead_extraction_folders(fixtures, host, tmp_path, fault):
    """What kill -9 leaves in the middle of `physiossl download`: the partial archive (.downloads/<name>.part) and,
    when the kill comes during extraction, the extraction folder of the dead process (named after host and pid, or
    by an older version after the pid alone). The next run resumes the transfer with a Range request, removes the
    dead folders, and installs the tree an uninterrupted download installs."""
    files = ptbxl_files(fixtures, padding=256 * 1024)
    archive = make_zip(files)
    url = host.serve(f"/files/{ARCHIVE}", archive)
    data = tmp_path / "data"
    out = data / "ptbxl"
    (data / ".downloads").mkdir(parents=True)
    kept = len(archive) // 3
    (data / ".downloads" / f"{ARCHIVE}.part").write_bytes(archive[:kept])
    pid = dead_pid()
    for folder in (data / f".ptbxl.tmp-{_HOST}-{pid}", data / f".ptbxl.tmp-{pid}"):
        (folder / TOP / "records100").mkdir(parents=True)
        (folder / TOP / "ptbxl_database.csv").write_text("ecg_id,patient")   # half extracted

    assert main(["download", "ptbxl", "--out", str(out), "--url", url, "--no-progress"]) == 0
    assert host.state.gets == [f"bytes={kept}-"]
    assert tree_digest(out) == files_digest(files)
    assert staging(data) == [] and sorted(p.name for p in data.iterdir()) == [".downloads", "ptbxl"]
    assert [p.name for p in (data / ".downloads").iterdir()] == [ARCHIVE]
    fault("download", "kill -9 mid-transfer (partial .part) and mid-extraction (dead runs' extraction folders)",
          "resumed identical: Range request from the kept byte, tree identical to the archive, dead extraction "
          "folders and the .part gone")


@pytest.mark.faults
@pytest.mark.slow
def test_kill_9_during_cli_download_resumes_identical(fixtures, host, tmp_path, fault):
    files = ptbxl_files(fixtures, padding=4 << 20)
    archive = make_zip(files)
    url = host.serve(f"/files/{ARCHIVE}", archive)
    host.state.throttle = 0.05   # about 1.3 MB/s: the transfer lasts seconds
    data = tmp_path / "data"
    out, part = data / "ptbxl", data / ".downloads" / f"{ARCHIVE}.part"
    command = [PHYSIOSSL, "download", "ptbxl", "--out", str(out), "--url", url, "--no-progress"]
    proc = start(command, tmp_path, tmp_path / "killed.log")
    kill_when(proc, lambda: part.exists() and part.stat().st_size >= 512 * 1024, tmp_path / "killed.log")
    kept = part.stat().st_size
    assert 0 < kept < len(archive) and not out.exists()

    host.state.throttle = 0.0
    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert host.state.gets[-1] == f"bytes={kept}-"
    assert main(["download", "ptbxl", "--out", str(tmp_path / "reference" / "ptbxl"), "--url", url,
                 "--no-progress"]) == 0
    assert tree_digest(out) == tree_digest(tmp_path / "reference" / "ptbxl") == files_digest(files)
    assert staging(data) == [] and [p.name for p in (data / ".downloads").iterdir()] == [ARCHIVE]
    fault("download", "kill -9 of `physiossl download` mid-transfer",
          "resumed identical: the rerun asked for the bytes after those kept (Range); the tree equals an "
          "uninterrupted download's; no .part or temporary folder left")


def download_config(url: str, data: str = "data/tiny", results: str = "results/tiny") -> dict:
    config = tiny_config()
    config["paths"] = {"data": data, "results": results}
    config["datasets"]["ptbxl"]["mode"] = "download"
    config["datasets"]["ptbxl"]["download"] = {"url": url}
    return config


@pytest.mark.faults
@pytest.mark.slow
def test_kill_9_of_snakemake_during_the_download_rule_resumes_identical(fixtures, host, tmp_path, fault):
    files = ptbxl_files(fixtures, padding=4 << 20)
    url = host.serve(f"/files/{ARCHIVE}", make_zip(files))
    host.state.throttle = 0.05
    project = make_project(tmp_path, "download", download_config(url))
    raw, part = project / "data/tiny/raw/ptbxl", project / f"data/tiny/raw/.downloads/{ARCHIVE}.part"
    target = ["--", "data/tiny/raw/ptbxl"]
    log = tmp_path / "snakemake.log"
    proc = start([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/tiny.yaml", *target],
                 project, log)
    kill_when(proc, lambda: part.exists() and part.stat().st_size >= 512 * 1024, log)
    kept = part.stat().st_size
    assert not raw.exists()

    host.state.throttle = 0.0
    rerun_after_kill(project, *target)
    assert f"bytes={kept}-" in host.state.gets
    assert main(["download", "ptbxl", "--out", str(tmp_path / "reference" / "ptbxl"), "--url", url,
                 "--no-progress"]) == 0
    got = {k: v for k, v in tree_digest(raw).items() if k != ".snakemake_timestamp"}
    assert got == tree_digest(tmp_path / "reference" / "ptbxl") == files_digest(files)
    assert staging(raw.parent) == []
    fault("download", "kill -9 of the Snakemake process group during the download rule",
          "resumed identical: the same command is refused while the killed run's lock remains (the message names "
          "--unlock); after `snakemake --unlock` it resumed after the kept bytes (Range) and the tree equals an "
          "uninterrupted download's; nothing temporary left")


# ============================================================================================= 2. bad cached archive
@pytest.mark.parametrize("damage", ["altered member", "truncated"])
def test_a_cached_archive_that_fails_verification_is_deleted_and_named(fixtures, host, tmp_path, capsys, fault,
                                                                       damage):
    """PhysioNet publishes no checksum of the archive itself: a cached archive is checked through the tree's
    SHA256SUMS.txt after extraction, or fails as a zip. Either way it is deleted, the error names it, and the rerun
    fetches it again."""
    files = ptbxl_files(fixtures)
    url = host.serve(f"/files/{ARCHIVE}", make_zip(files))
    data = tmp_path / "data"
    cached = data / ".downloads" / ARCHIVE
    cached.parent.mkdir(parents=True)
    rel = "records100/00000/00002_lr.dat"
    if damage == "altered member":
        cached.write_bytes(make_zip({**files, rel: b"\0" + files[rel][1:]}))
        words = f"{rel}: sha256 mismatch"
    else:
        cached.write_bytes(make_zip(files)[:-100])
        words = "not a valid zip"
    out = data / "ptbxl"
    command = ["download", "ptbxl", "--out", str(out), "--url", url, "--no-progress"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert words in err and f"removed the cached {cached}" in err, err
    assert not cached.exists() and not out.exists() and staging(data) == []
    assert host.state.gets == []   # the cached archive was used, not fetched
    assert main(command) == 0
    assert tree_digest(out) == files_digest(files)
    fault("download", f"cached archive in .downloads/ fails verification ({damage})",
          "refused: the cached archive is deleted and the error names it and says so; the rerun fetched it again and "
          "installed the verified tree")


def codetest_config(tmp_path: Path, url: str, api: str) -> Path:
    config = tiny_config()
    config["datasets"]["codetest"] = {"source": "codetest", "mode": "download", "fs": 100,
                                      "max_quarantine_fraction": 0.01, "download": {"url": url, "api": api}}
    path = tmp_path / "codetest.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_cached_download_failing_its_hosts_md5_is_deleted_named_and_fetched_again(fake_host, tmp_path, capsys,
                                                                                   caplog, fault):
    """Zenodo publishes each file's MD5 and size: a cached copy that differs (same size) is deleted, the warning
    names it, and the file is fetched again; if the host's copy is bad too, the error names the cached path and says
    that both were deleted."""
    from physiossl.data.ecg.sources import codetest
    from test_code15 import serve_zenodo

    demo = codetest.demo(tmp_path / "demo", n_records=10, seed=4)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(demo.rglob("*")):
            if path.is_file() and path.name != "SHA256SUMS.txt":
                zf.write(path, f"data/{path.relative_to(demo).as_posix()}")
    good = buffer.getvalue()
    serve_zenodo(fake_host, "3625006", {"data.zip": good})
    configfile = codetest_config(tmp_path, codetest.URL, f"{fake_host.base}/api")   # the file: from the API
    data = tmp_path / "data"
    cached = data / ".downloads" / "data.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(bytes(b ^ 0xFF for b in good[:16]) + good[16:])
    command = ["download", "codetest", "--configfile", str(configfile), "--out", str(data / "codetest"),
               "--no-progress"]
    with caplog.at_level("WARNING"):
        assert main(command) == 0, capsys.readouterr().err
    assert f"the cached {cached} failed verification (md5" in caplog.text and "deleted it" in caplog.text
    assert cached.read_bytes() == good
    tracings = (data / "codetest" / "ecg_tracings.hdf5").read_bytes()
    assert tracings == (demo / "ecg_tracings.hdf5").read_bytes()
    fault("download", "cached file in .downloads/ fails the host's MD5 (same size)",
          "recovered: deleted (the warning names the cached file and says so) and fetched again; the tree installed")

    cached.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    fake_host.fault["/api/records/3625006/files/data.zip/content"] = "altered"
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"verification failed for {cached}" in err and "also failed verification" in err and "deleted" in err, err
    assert not cached.exists() and not (cached.parent / "data.zip.part").exists()
    assert (data / "codetest" / "ecg_tracings.hdf5").read_bytes() == tracings   # the installed tree is kept
    fault("download", "cached file fails the host's MD5 and the host's copy fails it too",
          "refused: both copies deleted; the error names the cached path and says so; the installed tree is kept")


# ============================================================================================= 3. killed conversion
KILL_AT_MANIFEST = ("import os, signal, sys\n"
                    "import physiossl.data.store as store\n"
                    "store.write_manifest = lambda directory: os.kill(os.getpid(), signal.SIGKILL)\n"
                    "from physiossl.cli import main\n"
                    "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.slow
def test_kill_9_before_the_store_is_renamed_leaves_the_earlier_store_and_its_list(fixtures, tmp_path, capsys, fault):
    """The quarantine list goes into the store's temporary folder and is published next to the store only after the
    store's rename: kill -9 just before it (here at the store's manifest, deterministically) over an earlier run's
    store leaves that store with its own list; the rerun publishes both, equal to an uninterrupted conversion."""
    bad = copy_tree(fixtures / "ptbxl", tmp_path / "bad")
    dat = bad / "records100/00000/00002_lr.dat"
    dat.write_bytes(dat.read_bytes()[:100])   # quarantined: truncated .dat (its checksum line dropped)
    sums = bad / "SHA256SUMS.txt"
    sums.write_text("".join(line for line in sums.read_text().splitlines(keepends=True) if "00002_lr.dat" not in line))
    good = fixtures / "ptbxl"
    out = tmp_path / "stores" / "ptbxl_100hz.zarr"
    convert = ["convert", "ptbxl", "--out", str(out), "--max-quarantine", "1"]
    assert main([*convert, "--raw", str(bad)]) == 0
    assert "00002" in quarantine_path(out).read_text()

    killed = subprocess.run([sys.executable, "-c", KILL_AT_MANIFEST, *convert, "--raw", str(good)], cwd=tmp_path,
                            env=ENV, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert temporaries(out.parent, out.name)       # the dead run's folder
    assert open_store(out).attrs["n_records"] == 2 and "00002" in quarantine_path(out).read_text()
    capsys.readouterr()
    assert main(["verify-store", str(out)]) == 0   # the earlier store and its list, still a pair

    assert main([*convert, "--raw", str(good)]) == 0
    assert staging(out.parent) == []
    reference = tmp_path / "reference" / "ptbxl_100hz.zarr"
    assert main([*convert[:2], "--out", str(reference), *convert[4:], "--raw", str(good)]) == 0
    assert store_digest(out) == store_digest(reference)
    assert quarantine_path(out).read_bytes() == quarantine_path(reference).read_bytes()
    fault("convert", "kill -9 just before the store's rename, over an older store",
          "identical: the older store and its quarantine list stay in place as a pair (`verify-store` passes); the "
          "rerun removed the dead run's folder and wrote a store and list identical to an uninterrupted conversion")


@pytest.mark.faults
@pytest.mark.slow
def test_kill_9_during_cli_conversion_leaves_no_store_and_the_rerun_is_identical(demo_tree, tmp_path, fault):
    out = tmp_path / "stores" / "ptbxl_100hz.zarr"
    command = [PHYSIOSSL, "convert", "ptbxl", "--raw", str(demo_tree), "--out", str(out), "--max-quarantine", "0"]
    out.parent.mkdir()
    log = tmp_path / "killed.log"
    proc = start(command, tmp_path, log)
    kill_when(proc, lambda: any((t / "signals").exists() for t in temporaries(out.parent, out.name)), log)
    dead = temporaries(out.parent, out.name)
    assert dead and not out.exists() and not quarantine_path(out).exists()

    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert staging(out.parent) == [] and not any(t.exists() for t in dead)
    reference = tmp_path / "reference" / "ptbxl_100hz.zarr"
    assert main(["convert", "ptbxl", "--raw", str(demo_tree), "--out", str(reference), "--max-quarantine", "0"]) == 0
    assert store_digest(out) == store_digest(reference)
    fault("convert", "kill -9 of `physiossl convert` while it writes the store",
          "started afresh: no store and no quarantine list at the final paths after the kill; the rerun removed the "
          "dead run's temporary folder and wrote a store identical to an uninterrupted conversion (files and attrs "
          "but the creation time)")


@pytest.mark.faults
@pytest.mark.slow
def test_kill_9_of_snakemake_during_the_convert_rule_and_the_rerun_is_identical(tmp_path, monkeypatch, fault):
    config = tiny_config()
    project = make_project(tmp_path, "convert", config)
    snakemake(project, "--", "data/tiny/raw/ptbxl")
    stores = project / "data/tiny/stores"
    name = "ptbxl_100hz.zarr"
    target = ["--", f"data/tiny/stores/{name}"]
    log = tmp_path / "snakemake.log"
    proc = start([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/tiny.yaml", *target],
                 project, log)
    kill_when(proc, lambda: any((t / "signals").exists() for t in temporaries(stores, name)), log)
    dead = temporaries(stores, name)
    assert dead and not (stores / name).exists() and not quarantine_path(stores / name).exists()

    rerun_after_kill(project, *target)
    assert staging(stores) == [] and not any(t.exists() for t in dead)
    monkeypatch.chdir(project)   # the rule's relative paths, which the store's provenance records
    workers = config["resources"].get("convert", {}).get("threads", 1)
    assert main(["convert", "ptbxl", "--raw", "data/tiny/raw/ptbxl", "--out", f"reference/{name}", "--fs", "100",
                 "--max-quarantine", str(config["datasets"]["ptbxl"]["max_quarantine_fraction"]),
                 "--workers", str(workers)]) == 0
    assert store_digest(stores / name) == store_digest(project / "reference" / name)
    fault("convert", "kill -9 of the Snakemake process group during the convert rule",
          "started afresh: no store or list at the final paths; the same command is refused while the killed run's "
          "lock remains (the message names --unlock); after `snakemake --unlock` it reran the job, removed the dead "
          "temporary folder and wrote a store identical to an uninterrupted conversion")


# ============================================================================================= 4. damaged stores
def ecg_store(tmp_path: Path) -> tuple[Path, str]:
    from test_store import write_small_store
    path = tmp_path / "stores" / "toy.zarr"
    write_small_store(path)
    return path, "signals"


def sleep_store(tmp_path: Path) -> tuple[Path, str]:
    from test_sleep_store import _nights, write_store
    path = tmp_path / "stores" / "toy_sleep.zarr"
    write_store(path, _nights([70, 5, 90], labeled=[True, False, True]))
    return path, "features"


STORES = {"ecg": ecg_store, "sleep": sleep_store}


def shard_of(store: Path, array: str) -> Path:
    shards = sorted(p for p in (store / array / "c").rglob("*") if p.is_file())
    assert shards, sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))
    return shards[0]


def training_commands(kind: str, store: Path, tmp_path: Path) -> dict[str, list[str]]:
    """The commands that train on a store: pretraining and evaluation (ECG), sleep training (sleep)."""
    if kind == "ecg":
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        config["pretrain"]["trainer"]["max_epochs"] = config["evaluate"]["linear"]["epochs"] = 1
        (tmp_path / "one_epoch.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        config = str(tmp_path / "one_epoch.yaml")
        return {"pretrain": ["pretrain", "--configfile", config, "--method", "simclr", "--store", str(store),
                             "--eval-store", str(store), "--out", str(tmp_path / "run" / "encoder.pt")],
                "evaluate": ["evaluate", "--configfile", config, "--method", "random", "--protocol", "linear",
                             "--store", str(store), "--out", str(tmp_path / "run" / "linear.json")]}
    return {"train-sleep": ["train-sleep", "--configfile", str(REPO / "config" / "demo_sleep.yaml"), "--variant",
                            "supervised", "--fraction", "1.0", "--pool", "none", "--store", str(store), "--out",
                            str(tmp_path / "run" / "sleep.json")]}


def opener(kind: str):
    from physiossl.data.sleep.store import open_sleep_store
    return open_store if kind == "ecg" else open_sleep_store


def _missing(store, shard):
    shard.unlink()
    return f"{shard.relative_to(store).as_posix()} is missing"


def _truncated(store, shard):
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    return f"{shard.relative_to(store).as_posix()} has {len(data) // 2:,} bytes, the manifest {len(data):,}"


def _no_manifest(store, shard):
    (store / MANIFEST).unlink()
    return f"{MANIFEST} is missing"


def _bad_manifest(store, shard):
    (store / MANIFEST).write_text('{"files": {"zarr.json": ')   # cut short, as by a full disk or a broken copy
    return f"{MANIFEST} is unreadable"


DAMAGE = {"missing shard": _missing, "truncated shard": _truncated, "missing manifest": _no_manifest,
          "unreadable manifest": _bad_manifest}


@pytest.mark.parametrize("kind", list(STORES))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_store_is_refused_naming_the_store_and_the_file(tmp_path, capsys, fault, kind, damage):
    from physiossl.data.store import StoreError
    store, array = STORES[kind](tmp_path)
    problem = DAMAGE[damage](store, shard_of(store, array))
    with pytest.raises(StoreError) as info:
        opener(kind)(store)
    assert str(info.value).startswith(f"{store}: ") and problem in str(info.value), str(info.value)
    capsys.readouterr()
    assert main(["verify-store", str(store)]) == 1
    err = capsys.readouterr().err
    assert str(store) in err and problem in err, err
    for command, argv in training_commands(kind, store, tmp_path).items():
        assert main(argv) == 1, command
        err = capsys.readouterr().err
        assert f"physiossl {command}: error: {store}: " in err and problem in err, (command, err)
        assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    commands = " and ".join(f"`physiossl {c}`" for c in training_commands(kind, store, tmp_path))
    fault(f"{kind} store", damage,
          f"refused: opening the store, `physiossl verify-store` and {commands} each name the store and the file")


@pytest.mark.parametrize("kind", list(STORES))
def test_an_altered_shard_of_the_same_size_is_caught_by_verify_store(tmp_path, capsys, fault, kind):
    store, array = STORES[kind](tmp_path)
    name = alter(store, array)
    opener(kind)(store)   # opening checks the listing and the sizes only, by design: cheap on every open
    assert main(["verify-store", str(store)]) == 1
    err = capsys.readouterr().err
    assert f"{store}: {name} differs from the manifest (SHA-256)" in err, err
    fault(f"{kind} store", "altered shard, same size",
          "refused: `physiossl verify-store` names the store and the file (SHA-256); opening checks sizes only")


def alter(store: Path, array: str) -> str:
    """Flip one byte in the middle of a shard (the size stays); the shard's name in the store."""
    shard = shard_of(store, array)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return shard.relative_to(store).as_posix()


@pytest.mark.faults
@pytest.mark.slow
def test_pretraining_on_an_altered_shard_refuses_naming_the_file(tmp_path, capsys, fault):
    store, array = ecg_store(tmp_path)
    name = alter(store, array)
    code = main(training_commands("ecg", store, tmp_path)["pretrain"])
    err = capsys.readouterr().err
    assert code == 1 and f"{name} differs from the manifest (SHA-256)" in err, f"exit {code}: {err[-2000:]}"
    fault("ecg store", "altered shard, same size, given to `physiossl pretrain`",
          f"refused: the chunk fails its checksum on reading; the error names the store and {name}")


def test_the_sleep_data_path_refuses_an_altered_shard_naming_the_file(tmp_path, fault):
    from physiossl.data.sleep.loading import load_sleep_arrays
    from physiossl.data.store import StoreError
    store, array = sleep_store(tmp_path)
    name = alter(store, array)
    with pytest.raises(StoreError, match=re.escape(f"{name} differs from the manifest (SHA-256)")):
        load_sleep_arrays(store, ["n0", "n2"])
    fault("sleep store", "altered shard, same size, read by the sleep training data path (load_sleep_arrays, which "
          "`physiossl train-sleep` uses)", f"refused: the chunk fails its checksum on reading; the error names {name}")


@pytest.mark.parametrize("kind", list(STORES))
def test_a_hidden_file_in_a_store_is_ignored(tmp_path, capsys, fault, kind):
    """Snakemake writes `.snakemake_timestamp` into directory outputs such as stores: no part of the store."""
    store, array = STORES[kind](tmp_path)
    before = opener(kind)(store)[array][:]
    (store / ".snakemake_timestamp").write_text("")
    assert np.array_equal(opener(kind)(store)[array][:], before)
    assert main(["verify-store", str(store)]) == 0
    fault(f"{kind} store", "hidden file added (.snakemake_timestamp)",
          "identical: the store opens, verifies and reads as before")


@pytest.mark.parametrize("extra", ["xref/ptbxl", "README.txt"])
def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, capsys, fault, extra):
    """Copying a store over an older one without deleting leaves the older one's arrays; `xref/<dataset>` is read by
    the pretraining leakage guard when present, so a stale one would change which records are held out."""
    import zarr
    store, _ = ecg_store(tmp_path)
    n = open_store(store).attrs["n_records"]
    if extra == "README.txt":
        (store / extra).write_text("notes")
    else:
        zarr.open_group(str(store), mode="a").create_array(extra, shape=(n,), dtype=str, chunks=(n,))[:] = \
            np.array(["1"] * n)
    with pytest.raises(StoreError, match=re.escape(extra)):
        open_store(store)
    assert main(["verify-store", str(store)]) == 1
    assert extra in capsys.readouterr().err
    fault("ecg store", f"file the manifest does not list ({extra})",
          "refused: opening the store and `physiossl verify-store` name the unlisted files")


# ============================================================================================= 5. shell characters
# each part would create a PWNED file if a shell ran it: $IFS expands to a space (a URL may not hold one)
INJECTED = "$(touch$IFS'PWNED1')&b=x;touch$IFS'PWNED2'&&touch$IFS'PWNED3'"


def quoting_project(fixtures: Path, host: Host, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A tiny project whose `download.url` carries a command substitution, backquotes, `;`, `&` and a query string,
    with data and result folders whose names have spaces."""
    files = ptbxl_files(fixtures)
    url = host.serve(f"/files/{ARCHIVE}", make_zip(files), query=f"?download=1&token={INJECTED}")
    config = download_config(url, data="data/my data", results="results/my results")
    return make_project(tmp_path, "quoting", config), files


def injected(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in Path(folder).rglob("PWNED*")]


@pytest.mark.faults
@pytest.mark.slow
def test_shell_characters_in_the_url_and_spaces_in_paths_through_the_download_rule(fixtures, host, tmp_path, fault):
    """The plan quotes every path, and the URL never reaches a command line (the command reads it from the config
    file); the download rule then runs against the localhost host: the tree is installed under the data folder with
    spaces, its log under the results folder with spaces, and nothing injected runs. (A data folder with shell
    characters through the demo and convert rules: test_shell_quoting.py.)"""
    project, files = quoting_project(fixtures, host, tmp_path)
    target = "data/my data/raw/ptbxl"
    plan = snakemake(project, "-n", "-p", "--", target).stdout
    assert "--out 'data/my data/raw/ptbxl'" in plan and \
        "--log 'results/my results/logs/download_data/ptbxl.log'" in plan, plan
    assert "touch" not in plan and "PWNED" not in plan and host.state.gets == [], plan
    assert not injected(tmp_path)
    fault("shell quoting", "download.url with $(...), ;, &, ' and a query; paths.data and paths.results with spaces "
          "(dry run)", "refused: nothing of the URL reaches the planned commands (read from the config file); every "
          "path is one quoted argument")

    snakemake(project, "--", target)
    assert tree_digest(project / target).items() >= files_digest(files).items()
    assert host.state.gets == [None]   # the URL with its query string was fetched, as it is
    assert "download ptbxl" in (project / "results/my results/logs/download_data/ptbxl.log").read_text()
    assert not injected(tmp_path, Path.cwd())
    fault("shell quoting", "the same config through the download rule against the localhost host",
          "refused: no injected command ran (no PWNED file anywhere); the tree is installed under the data path with "
          "spaces and the job's log under the results path with spaces")


def test_a_url_with_characters_a_url_may_not_hold_is_refused_by_the_config_check(tmp_path, capsys, fault):
    config = download_config("http://127.0.0.1:1/files/x.zip?token=`touch PWNED`&b=${IFS}")
    path = tmp_path / "bad_url.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid configuration" in err and "datasets.ptbxl.download.url" in err, err
    assert not injected(tmp_path)
    fault("shell quoting", "download.url with backquotes, braces or spaces",
          "refused: the config check names datasets.ptbxl.download.url (such characters must be percent-encoded)")


# ============================================================================================= 6. full disk
def enospc(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([filename] if filename else []))


def test_a_full_disk_while_writing_a_store_names_the_store(fixtures, tmp_path, monkeypatch, capsys, fault):
    import zarr.storage._local as local
    put = local._put

    def full(path, value, *args, **kwargs):
        if "/signals/c/" in Path(path).as_posix():   # a write() that fails carries no file name
            raise enospc()
        return put(path, value, *args, **kwargs)

    monkeypatch.setattr(local, "_put", full)
    out = tmp_path / "stores" / "ptbxl_100hz.zarr"
    command = ["convert", "ptbxl", "--raw", str(fixtures / "ptbxl"), "--out", str(out)]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and str(out) in err, err
    assert not out.exists() and staging(out.parent) == []
    monkeypatch.setattr(local, "_put", put)
    assert main(command) == 0 and open_store(out).attrs["n_records"] == 3
    fault("disk full", "ENOSPC while `physiossl convert` writes a store shard",
          "refused: the error says the disk is full and names the store; no store or temporary folder left; the "
          "rerun converts")


def test_a_full_disk_while_writing_a_result_names_the_file(tmp_path, monkeypatch, capsys, fault):
    from test_report import result
    runs = tmp_path / "runs"
    runs.mkdir()
    paths = []
    for method, protocol, auc in (("simclr", "linear", 0.8), ("simclr", "finetune", 0.85), ("random", "linear", 0.6),
                                  ("random", "finetune", 0.75)):
        paths.append(runs / f"{method}-{protocol}.json")
        paths[-1].write_text(json.dumps(result(method, protocol, auc)))
    out = tmp_path / "report"
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if self.parent == out:   # creating the file fails: the error carries its name
            raise enospc(str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    command = ["report", "--configfile", str(REPO / "config" / "config.yaml"), "--out-dir", str(out),
               *map(str, paths)]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and str(out) in err and re.search(r"\.table\.csv\.tmp-", err), err
    assert not (out / "table.csv").exists() and not (out / "metrics.json").exists()
    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(command) == 0 and (out / "metrics.json").exists()
    fault("disk full", "ENOSPC while `physiossl report` writes a result table",
          "refused: the error says the disk is full and names the output folder and the file; no result file "
          "written; the rerun writes them")


def test_a_full_disk_while_downloading_names_the_partial_file_and_the_rerun_resumes(fixtures, host, tmp_path,
                                                                                   monkeypatch, capsys, fault):
    files = ptbxl_files(fixtures, padding=256 * 1024)
    archive = make_zip(files)
    url = host.serve(f"/files/{ARCHIVE}", archive)
    limit = len(archive) // 2

    class FullDisk(io.FileIO):
        """A file on a disk with room for ``limit`` bytes: the write that passes it stores what fits, then fails."""

        def write(self, b):
            room = limit - self.tell()
            if len(b) > room:
                super().write(bytes(b[:max(room, 0)]))
                raise enospc()
            return super().write(b)

    monkeypatch.setattr(fetch, "open", lambda path, mode="r", *a, **k: FullDisk(path, mode.replace("b", "")),
                        raising=False)
    data = tmp_path / "data"
    out, part = data / "ptbxl", data / ".downloads" / f"{ARCHIVE}.part"
    command = ["download", "ptbxl", "--out", str(out), "--url", url, "--no-progress"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and str(out) in err and str(part) in err, err
    kept = part.stat().st_size
    assert kept == limit and not out.exists()
    monkeypatch.delattr(fetch, "open")
    assert main(command) == 0
    assert host.state.gets[-1] == f"bytes={kept}-" and tree_digest(out) == files_digest(files)
    assert staging(data) == []
    fault("disk full", "ENOSPC while `physiossl download` writes the archive",
          "refused: the error says the disk is full and names the output and the partial file, which is kept; the "
          "rerun resumed from it (Range) and installed the identical tree")


def test_a_full_disk_while_extracting_names_the_output_and_the_rerun_uses_the_cached_archive(
        fixtures, host, tmp_path, monkeypatch, capsys, fault):
    files = ptbxl_files(fixtures)
    url = host.serve(f"/files/{ARCHIVE}", make_zip(files))
    copy = shutil.copyfileobj
    copied = []

    def full(src, dst, *args, **kwargs):
        copied.append(dst)
        if len(copied) == 5:   # the fifth member of the archive does not fit
            raise enospc()
        return copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfileobj", full)
    data = tmp_path / "data"
    out = data / "ptbxl"
    command = ["download", "ptbxl", "--out", str(out), "--url", url, "--no-progress"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and str(out) in err, err
    assert not out.exists() and staging(data) == [] and (data / ".downloads" / ARCHIVE).is_file()
    monkeypatch.setattr(shutil, "copyfileobj", copy)
    assert main(command) == 0
    assert host.state.gets == [None] and tree_digest(out) == files_digest(files)   # extracted from the cached copy
    fault("disk full", "ENOSPC while `physiossl download` extracts the archive",
          "refused: the error says the disk is full and names the output; the extraction folder is removed and the "
          "downloaded archive kept, from which the rerun installed the tree without fetching it again")
