"""Resumable download, safe extraction and checksum verification of dataset archives.

PhysioNet distributes datasets as multi-gigabyte zip archives. This module fetches
them robustly:

* :func:`download_file` streams into ``<dest>.part``, resumes interrupted transfers
  with HTTP ``Range`` requests (also across process restarts), retries dropped
  connections without starting over, optionally checks a SHA-256 and only then
  renames the part file to its final name.
* :func:`safe_extract_zip` extracts a zip while refusing members that would escape
  the target directory (absolute paths, ``..``) and symlink members.
* :func:`verify_sha256sums` checks a tree against a ``SHA256SUMS.txt`` manifest.
* :func:`fetch_archive_tree` combines the three and installs the verified tree
  atomically, so a reader never sees a half-extracted dataset.

Every failure is reported as :class:`DownloadError` (or a subclass) whose message
names the URL or file concerned.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from tqdm.auto import tqdm

from .files import replace_path, sha256_file, tmp_sibling

__all__ = [
    "DownloadError",
    "file_digests",
    "get_json",
    "CorruptArchiveError",
    "download_file",
    "safe_extract_zip",
    "verify_sha256sums",
    "fetch_archive_tree",
]

log = logging.getLogger(__name__)

#: Base delay (seconds) before retry ``k`` (1-based) waits ``RETRY_BACKOFF_S * 2**(k-1)``,
#: capped at :data:`RETRY_BACKOFF_MAX_S`.
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 30.0

_HASH_BLOCK = 1 << 20
_MAX_REPORTED = 10
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(.+?)\s*$")


class DownloadError(RuntimeError):
    """A download, extraction or verification step failed."""


class CorruptArchiveError(DownloadError):
    """The archive is not a readable zip file (bad structure or CRC error)."""


class _Retryable(Exception):
    """Internal: a transient failure after which the download may be resumed."""


# --------------------------------------------------------------------------- helpers


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Return ``(start, total)`` from a ``Content-Range`` header (``None`` when unknown)."""
    if not value:
        return None, None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _remote_size(session: requests.Session, url: str, timeout: float) -> int | None:
    """Best-effort size of the remote file via ``HEAD`` (``None`` if unknown)."""
    try:
        resp = session.head(
            url, allow_redirects=True, timeout=timeout, headers={"Accept-Encoding": "identity"}
        )
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    return _int_header(resp, "Content-Length")


def _is_html(resp: requests.Response, head: bytes) -> bool:
    """An HTML page: its Content-Type says so, or the body (from its first byte) starts like one."""
    if resp.headers.get("Content-Type", "").split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for each of ``algorithms`` (hashlib names), in one read."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _mismatches(path: Path, size: int | None, hashes: dict[str, str]) -> list[str]:
    """What differs between ``path`` and the expected size and hashes ({algorithm: hex})."""
    problems = []
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problems.append(f"{actual_size} bytes, expected {size} (truncated or a different file)")
    elif hashes:
        actual = file_digests(path, tuple(hashes))
        problems += [f"{name} {actual[name]}, expected {want}" for name, want in hashes.items() if actual[name] != want]
    return problems


def get_json(url: str, *, timeout: float = 60.0, params: dict | None = None) -> object:
    """GET ``url`` and decode its JSON body; DownloadError (naming the URL) for an HTTP error, an HTML page or a
    body that is not JSON."""
    try:
        resp = requests.get(url, params=params, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise DownloadError(f"{url}: {exc}") from exc
    where = resp.url or url
    if resp.status_code != 200:
        raise DownloadError(f"{where}: HTTP {resp.status_code} {resp.reason}")
    if _is_html(resp, resp.content[:512]):
        raise DownloadError(f"{where}: the server answered with an HTML page, not the JSON of its API "
                            f"(an error or login page); check the URL")
    try:
        return resp.json()
    except ValueError as exc:
        raise DownloadError(f"{where}: the answer is not JSON ({exc})") from exc


# --------------------------------------------------------------------------- download


def _iter_body(resp: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """Yield the response body as it arrives.

    ``Response.iter_content`` (urllib3 2.x) buffers up to ``chunk_size`` bytes and
    drops that buffer when the connection breaks, so the bytes received since the
    last full chunk would be lost for the resume. ``read1`` hands over whatever has
    arrived, so everything received before a disconnect reaches the part file.
    urllib3 errors are translated into the ``requests`` exceptions used elsewhere.
    """
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:  # urllib3 < 2
        yield from resp.iter_content(chunk_size=chunk_size)
        return
    try:
        while chunk := read1(chunk_size, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    label: str,
    expected_sha256: str | None,
    chunk_size: int,
    timeout: float,
    progress: bool,
) -> None:
    """Run one GET (resuming from ``part``'s size); return once ``part`` is complete.

    Raises :class:`_Retryable` (or a ``requests`` transport error) for transient
    failures and :class:`DownloadError` for permanent ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"

    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        status = resp.status_code

        if status == 416 and offset:
            # The part file already reaches (or passes) the end of the remote file.
            _, total = _parse_content_range(resp.headers.get("Content-Range"))
            if total is None:
                total = _remote_size(session, url, timeout)
            if total is None and expected_sha256 is not None:
                if sha256_file(part) == expected_sha256.lower():
                    return
            elif total == offset:
                log.info("%s: partial file %s is already complete (%d bytes)", url, part, offset)
                return
            _unlink_quietly(part)
            raise _Retryable(
                f"HTTP 416 for range {offset}- but remote size is {total}; "
                f"discarded {part} and restarting from zero"
            )

        if status == 206 and offset:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                _unlink_quietly(part)
                raise _Retryable(
                    f"server answered range {offset}- with Content-Range "
                    f"{resp.headers.get('Content-Range')!r}; restarting from zero"
                )
            if total is None and (length := _int_header(resp, "Content-Length")) is not None:
                total = offset + length
            mode = "ab"
        elif status == 200:
            if offset:
                log.warning("%s: server ignored the Range request; restarting from zero", url)
                offset = 0
            total = _int_header(resp, "Content-Length")
            mode = "wb"
        elif status in _RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {status} {resp.reason}")
        else:
            raise DownloadError(f"{url}: HTTP {status} {resp.reason}")

        if resp.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
            # Content-Length counts encoded bytes; urllib3 still detects truncation.
            total = None

        body = _iter_body(resp, chunk_size)
        first = next(body, b"")
        if not label.lower().endswith((".html", ".htm")) and _is_html(resp, first if mode == "wb" else b""):
            raise DownloadError(
                f"{url}: the server answered HTTP {status} with an HTML page instead of {label} (an error or "
                f"login page); nothing was saved. Check that the URL (or the host's API) still serves this file, "
                f"then rerun")

        try:
            with open(part, mode) as fh, tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in itertools.chain([first], body):
                    fh.write(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            if isinstance(exc, requests.RequestException):
                raise
            raise DownloadError(f"{url}: cannot write {part}: {exc}") from exc

    size = part.stat().st_size
    if total is not None and size < total:
        raise _Retryable(f"connection closed after {size} of {total} bytes")
    if total is not None and size > total:
        _unlink_quietly(part)
        raise _Retryable(f"received {size} bytes but expected {total}; restarting from zero")


def download_file(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    expected_md5: str | None = None,
    expected_size: int | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    max_retries: int = 5,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` resumably and return ``dest``.

    Data is streamed into ``dest.name + ".part"``; an existing part file is resumed
    with ``Range: bytes=N-`` (a server answering 200 restarts the file from zero).
    Dropped or truncated transfers are retried up to ``max_retries`` times, each
    resuming from the bytes already on disk, with exponential backoff. An HTML page
    in place of the file (an error or login page answered with status 200) is refused.
    With ``expected_size`` / ``expected_sha256`` / ``expected_md5`` the result is
    verified; on a mismatch the part file is deleted and the error says so.
    The finished file is moved into place with :func:`os.replace`. If ``dest``
    already exists and matches what is expected, nothing is fetched; if it does not
    match, it is deleted and downloaded again.
    """
    dest = Path(dest)
    hashes = {name: value.lower() for name, value in (("sha256", expected_sha256), ("md5", expected_md5)) if value}

    cached = ""   # what a cached copy that failed verification had (it is deleted and fetched again)
    if dest.exists():
        problems = _mismatches(dest, expected_size, hashes)
        if not problems:
            log.debug("%s already exists and matches what is expected; skipping download", dest)
            return dest
        cached = "; ".join(problems)
        log.warning("the cached %s failed verification (%s): deleted it and downloading it again", dest, cached)
        _unlink_quietly(dest)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create directory {dest.parent} for {url}: {exc}") from exc
    part = dest.with_name(dest.name + ".part")

    failures = 0
    with requests.Session() as session:
        while True:
            try:
                _attempt(
                    session,
                    url,
                    part,
                    label=dest.name,
                    expected_sha256=hashes.get("sha256"),
                    chunk_size=chunk_size,
                    timeout=timeout,
                    progress=progress,
                )
                break
            except (_Retryable, requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                failures += 1
                have = part.stat().st_size if part.exists() else 0
                if failures > max_retries:
                    raise DownloadError(
                        f"{url}: giving up after {failures} failed attempts "
                        f"({have} bytes kept in {part} for a later resume): {exc}"
                    ) from exc
                delay = min(RETRY_BACKOFF_S * 2 ** (failures - 1), RETRY_BACKOFF_MAX_S)
                log.warning("%s: %s; retry %d/%d from byte %d in %.1fs",
                            url, exc, failures, max_retries, have, delay)
                if delay > 0:
                    time.sleep(delay)
            except requests.RequestException as exc:
                raise DownloadError(f"{url}: {exc}") from exc

    problems = _mismatches(part, expected_size, hashes)
    if problems:
        _unlink_quietly(part)
        before = f" (the copy cached there before also failed verification: {cached}; it was deleted)" if cached else ""
        raise DownloadError(
            f"verification failed for {dest} (from {url}): {'; '.join(problems)}. The downloaded file was deleted"
            f"{before}; rerun to fetch it again. If it fails again, the host serves a different file than it "
            f"publishes: report it to the host, or opt out of verification (download.verify: false) at your own risk"
        )

    try:
        os.replace(part, dest)
    except OSError as exc:
        raise DownloadError(f"cannot move {part} to {dest}: {exc}") from exc
    log.info("downloaded %s -> %s (%d bytes)", url, dest, dest.stat().st_size)
    return dest


# --------------------------------------------------------------------------- extraction


def _check_member(info: zipfile.ZipInfo, root: Path, archive: Path) -> Path:
    """Return the destination of a zip member, refusing unsafe ones."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DownloadError(f"{archive}: refusing symlink member {name!r}")
    normalized = name.replace("\\", "/")
    if (
        normalized.startswith("/")
        or PureWindowsPath(name).drive
        or PureWindowsPath(name).is_absolute()
    ):
        raise DownloadError(f"{archive}: refusing member with absolute path {name!r}")
    if ".." in PurePosixPath(normalized).parts:
        raise DownloadError(f"{archive}: refusing member {name!r} that escapes the target")
    dest = (root / normalized).resolve()
    if dest != root and not dest.is_relative_to(root):
        raise DownloadError(f"{archive}: refusing member {name!r} that escapes the target")
    return dest


def safe_extract_zip(archive: Path, target: Path) -> list[Path]:
    """Extract ``archive`` into ``target`` and return the extracted file paths.

    All members are checked before anything is written: absolute paths, ``..``
    components, paths resolving outside ``target`` and symlink members are refused
    with :class:`DownloadError` naming the member. An unreadable zip raises
    :class:`CorruptArchiveError` naming the archive.
    """
    archive = Path(archive)
    target = Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise CorruptArchiveError(f"{archive}: not a valid zip archive ({exc})") from exc
    except OSError as exc:
        raise DownloadError(f"{archive}: cannot open archive: {exc}") from exc

    extracted: list[Path] = []
    with zf:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create extraction directory {target}: {exc}") from exc
        root = target.resolve()
        plan = [(info, _check_member(info, root, archive)) for info in zf.infolist()]
        for info, dest in plan:
            try:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _HASH_BLOCK)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # zlib: a damaged deflate stream
                raise CorruptArchiveError(
                    f"{archive}: corrupt member {info.filename!r}: {exc}"
                ) from exc
            except OSError as exc:
                raise DownloadError(
                    f"{archive}: cannot extract member {info.filename!r} to {dest}: {exc}"
                ) from exc
            extracted.append(dest)
    log.debug("extracted %d files from %s into %s", len(extracted), archive, target)
    return extracted


# --------------------------------------------------------------------------- verification


def verify_sha256sums(root: Path, sums_file: str = "SHA256SUMS.txt", absent: list[str] | None = None,
                      skip: Sequence[str] = ()) -> int:
    """Verify the files listed in ``root / sums_file``; return how many were checked.

    Lines read ``<sha256 hex>  <relative path>`` (a ``*`` binary marker before the
    path is accepted; blank lines and ``#`` comments are skipped). Missing files and
    hash mismatches are collected and reported together in one :class:`DownloadError`;
    with a list as ``absent``, missing files are appended to it instead (a tree the user
    has trimmed, e.g. PTB-XL without its 500 Hz records). Listed paths under a folder of ``skip``
    (``"records500/"``: files a conversion does not read) are neither checked nor counted.
    """
    root = Path(root)
    sums_path = root / sums_file
    if not sums_path.is_file():
        raise DownloadError(f"checksum file {sums_path} not found")
    try:
        lines = sums_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DownloadError(f"cannot read checksum file {sums_path}: {exc}") from exc

    entries: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _SUMS_LINE.match(stripped)
        if not match:
            raise DownloadError(f"{sums_path}:{lineno}: malformed checksum line {line!r}")
        entries.append((match.group(1).lower(), match.group(2)))
    if not entries:
        raise DownloadError(f"checksum file {sums_path} lists no files")
    entries = [(expected, rel) for expected, rel in entries
               if not PurePosixPath(rel).as_posix().startswith(tuple(skip))]          # "./records500/..." too

    resolved_root = root.resolve()
    resolved_dirs: dict[Path, Path] = {}     # a release has many files in few folders: resolve each folder once

    def resolved(path: Path, rel: str) -> Path:
        if ".." in PurePosixPath(rel).parts or path.is_symlink():
            return path.resolve()
        if path.parent not in resolved_dirs:
            resolved_dirs[path.parent] = path.parent.resolve()
        return resolved_dirs[path.parent] / path.name

    problems: list[str] = []
    for expected, rel in entries:
        path = root / rel
        if PurePosixPath(rel).is_absolute() or not resolved(path, rel).is_relative_to(resolved_root):
            problems.append(f"{rel}: path lies outside {root}")
            continue
        if not path.is_file():
            if absent is not None:
                absent.append(rel)
            else:
                problems.append(f"{rel}: missing (expected sha256 {expected})")
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            problems.append(f"{rel}: unreadable ({exc})")
            continue
        if actual != expected:
            problems.append(f"{rel}: sha256 mismatch, expected {expected}, got {actual}")

    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = len(problems) - _MAX_REPORTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DownloadError(
            f"{sums_path}: {len(problems)} of {len(entries)} files failed verification:\n"
            f"  {shown}{tail}"
        )
    verified = len(entries) - len(absent or ())
    log.info("verified %d files against %s", verified, sums_path)
    return verified


# --------------------------------------------------------------------------- orchestration


def _archive_name(url: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if not name or name in (".", ".."):
        raise DownloadError(f"{url}: cannot derive an archive file name from the URL path")
    return name


def fetch_archive_tree(
    url: str,
    out_dir: Path,
    *,
    sums_file: str | None = "SHA256SUMS.txt",
    archive_sha256: str | None = None,
    archive_name: str | None = None,
    progress: bool = True,
    **download_kw,
) -> Path:
    """Download a zip archive, extract and verify it, and install it as ``out_dir``.

    The archive is cached (and resumable) at ``out_dir.parent/.downloads/<name>`` (``archive_name``, else
    the URL's last path part); ``download_kw`` is passed on to :func:`download_file` (e.g. the host's
    ``expected_md5`` and ``expected_size``). Extraction happens in a
    hidden sibling temporary directory; a single top-level directory inside the
    archive becomes the tree root. When ``sums_file`` is given the tree is checked
    with :func:`verify_sha256sums`. Only then is ``out_dir`` replaced atomically.
    On failure the temporary directory is removed (a partial download is kept so a
    rerun resumes; a cached archive that is not a valid zip is deleted unless it
    was verified against a checksum).
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    archive = parent / ".downloads" / (archive_name or _archive_name(url))
    verified = archive_sha256 is not None or download_kw.get("expected_md5") is not None
    download_file(url, archive, expected_sha256=archive_sha256, progress=progress, **download_kw)

    tmp = tmp_sibling(out_dir)   # also removes the extraction folders of killed runs
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            safe_extract_zip(archive, tmp)
        except CorruptArchiveError as exc:
            if not verified:
                _unlink_quietly(archive)
                raise CorruptArchiveError(
                    f"{exc} (downloaded from {url}; removed the cached {archive} so that a rerun fetches it again)"
                ) from exc
            raise

        entries = [p for p in tmp.iterdir() if p.name != "__MACOSX"]
        tree = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp

        if sums_file is not None:
            try:
                verify_sha256sums(tree, sums_file)
            except DownloadError as exc:
                _unlink_quietly(archive)
                raise DownloadError(f"{exc}\n(downloaded from {url}; removed the cached {archive} so that a rerun "
                                    f"downloads it again)") from exc

        try:
            replace_path(tree, out_dir)
        except OSError as exc:
            raise DownloadError(
                f"cannot install extracted tree {tree} as {out_dir}: {exc}"
            ) from exc
    except OSError as exc:
        raise DownloadError(f"{url}: cannot install {out_dir} (extracting into {tmp}, now removed): {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("installed %s from %s", out_dir, url)
    return out_dir
