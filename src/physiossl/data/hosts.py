"""What each data host publishes about its files, and downloads verified against it.

Every host lists its files with a checksum through a public, anonymous API; :func:`fetch_files` downloads them
resumably (:func:`physiossl.data.fetch.download_file`) and checks size and checksum before a file is used:

- **Zenodo** (CODE-15%, the CODE test set): ``GET <api>/records/<id>`` → ``files[]`` with ``key``, ``size``,
  ``checksum`` = ``"md5:<hex>"`` and ``links.self`` (``.../files/<key>/content``; keys with spaces are not
  URL-encoded there). ``GET <api>/records/<id>/files`` answers ``{"entries": [...]}`` with the same entries.
- **figshare** (Chapman–Shaoxing): ``GET <api>/collections/<id>/articles`` (paged) → the articles, and for each
  ``GET <api>/articles/<id>/files`` (paged) → ``name``, ``size``, ``computed_md5`` (empty while figshare still
  processes a file; ``supplied_md5`` then), ``download_url``, ``is_link_only``.
- **Science Data Bank** (PSG-Audio): the anonymous Croissant JSON-LD export
  ``<api>/api/gin-sdb-croissant/public/exportCroissant?datasetId=<id>&version=V<n>`` → ``distribution[]`` with
  ``name``, ``contentSize`` (a string such as ``"27719296 B"``), ``md5`` and ``contentUrl``
  (``https://download.scidb.cn/download?fileId=..&path=/V3/APNEA_EDF/<night>/<night>[001].edf&fileName=..``:
  the file's place in the release is the ``path`` query value without its ``/V<n>/`` prefix). A version without
  its ``V`` answers HTTP 200 with an empty distribution, which is refused here with that hint.
- **PhysioNet** publishes ``SHA256SUMS.txt`` inside each project's archive (:func:`.fetch.fetch_archive_tree`).

The host's answer is saved with the raw tree as :data:`MANIFEST` (:func:`write_manifest`), so the provenance of
every installed file can be traced to what its host published.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, urlsplit

import requests
from requests.utils import requote_uri
from tqdm.auto import tqdm

from .fetch import DownloadError, download_file, get_json

log = logging.getLogger(__name__)

ZENODO_API = "https://zenodo.org/api"
FIGSHARE_API = "https://api.figshare.com/v2"
SCIDB_API = "https://www.scidb.cn"
MANIFEST = "HOST_MANIFEST.json"
PAGE_SIZE = 1000
_SIZE = re.compile(r"^\s*(\d+)\s*(?:B|bytes?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class HostFile:
    """One file as its host lists it: ``path`` is its place in the raw tree (a file name or a relative path)."""

    path: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


# --------------------------------------------------------------------------------------------- Zenodo
def zenodo_files(record: str, api: str = ZENODO_API) -> tuple[list[HostFile], dict]:
    """The files of Zenodo record ``record`` and the record's JSON."""
    url = f"{api.rstrip('/')}/records/{record}"
    doc = get_json(url)
    entries = doc.get("files") if isinstance(doc, dict) else None
    if isinstance(entries, dict):            # the /files endpoint's shape
        entries = entries.get("entries")
    if not isinstance(entries, list) or not entries:
        raise DownloadError(f"{url}: the record lists no files; is {record} the right Zenodo record?")
    files = []
    for entry in entries:
        key = entry.get("key")
        if not key:
            raise DownloadError(f"{url}: a file entry without 'key': {entry}")
        algorithm, _, digest = str(entry.get("checksum") or "").partition(":")
        links = entry.get("links") or {}
        link = links.get("content") or links.get("self") or f"{url}/files/{quote(key)}/content"
        files.append(HostFile(path=key, url=requote_uri(link), size=_int(entry.get("size")),
                              md5=digest.lower() if algorithm.lower() == "md5" and digest else None))
    return files, doc


def zenodo_record_id(url: str) -> str | None:
    """The record id of a Zenodo URL (``https://zenodo.org/records/3625006/files/data.zip``), or None."""
    match = re.search(r"zenodo\.org/(?:api/)?records?/(\d+)", url)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------- figshare
def figshare_collection_files(collection: str, api: str = FIGSHARE_API) -> tuple[list[HostFile], dict]:
    """The files of every article of figshare collection ``collection`` and the listings as fetched."""
    base = api.rstrip("/")
    articles = _pages(f"{base}/collections/{collection}/articles")
    if not articles:
        raise DownloadError(f"{base}/collections/{collection}/articles: the collection lists no articles")
    files, listing = [], {"collection": str(collection), "articles": []}
    for article in articles:
        entries = _pages(f"{base}/articles/{article['id']}/files")
        listing["articles"].append({"id": article["id"], "title": article.get("title"), "files": entries})
        for entry in entries:
            if entry.get("is_link_only"):
                continue
            md5 = entry.get("computed_md5") or entry.get("supplied_md5") or None
            files.append(HostFile(path=entry["name"], url=entry["download_url"], size=_int(entry.get("size")),
                                  md5=md5.lower() if md5 else None))
    return files, listing


def figshare_collection_id(url: str) -> str | None:
    """The collection id of a figshare collection URL (``https://figshare.com/collections/ChapmanECG/4560497/2``)."""
    match = re.search(r"/collections/(?:[^/]+/)?(\d+)", urlsplit(url).path)
    return match.group(1) if match else None


def _pages(url: str) -> list[dict]:
    """Every item of a paged figshare listing (``page``/``page_size``; a short page is the last)."""
    items: list[dict] = []
    for page in range(1, 10_000):
        batch = get_json(url, params={"page": page, "page_size": PAGE_SIZE})
        if not isinstance(batch, list):
            raise DownloadError(f"{url}: expected a JSON list, got {type(batch).__name__}")
        items += batch
        if len(batch) < PAGE_SIZE:
            break
    return items


# --------------------------------------------------------------------------------------------- Science Data Bank
def scidb_version(version: str | int) -> str:
    """``3``, ``"3"`` or ``"v3"`` → ``"V3"`` (the export answers an empty distribution without the ``V``)."""
    text = str(version).strip()
    return "V" + text.lstrip("vV")


def scidb_files(dataset_id: str, version: str | int, api: str = SCIDB_API) -> tuple[list[HostFile], dict]:
    """The files of a Science Data Bank dataset version from its Croissant export, and the export."""
    version = scidb_version(version)
    url = f"{api.rstrip('/')}/api/gin-sdb-croissant/public/exportCroissant"
    doc = get_json(url, params={"datasetId": dataset_id, "version": version})
    where = f"{url}?datasetId={dataset_id}&version={version}"
    distribution = doc.get("distribution") if isinstance(doc, dict) else None
    if not distribution:
        raise DownloadError(
            f"{where}: the export lists no files (empty distribution). Check the dataset id ({dataset_id}; set "
            f"download.dataset_id) and the version ({version}; the V prefix is required)")
    files = []
    for entry in distribution:
        content = entry.get("contentUrl") or entry.get("url")
        if not content:
            continue                         # a FileSet or other non-file node
        path = _scidb_path(content, entry.get("name"), version, where)
        md5 = entry.get("md5") or entry.get("cr:md5")
        files.append(HostFile(path=path, url=requote_uri(content), size=_content_size(entry.get("contentSize"), where),
                              md5=md5.lower() if md5 else None))
    if not files:
        raise DownloadError(f"{where}: the distribution has no file with a contentUrl")
    return files, doc


def _scidb_path(content_url: str, name: str | None, version: str, where: str) -> str:
    query = parse_qs(urlsplit(content_url).query)
    raw = (query.get("path") or [name or ""])[0]
    parts = [p for p in PurePosixPath(raw).parts if p != "/"]
    if parts and parts[0].upper() == version.upper():
        parts = parts[1:]
    if not parts or ".." in parts or any(":" in p or "\\" in p for p in parts):
        raise DownloadError(f"{where}: refusing file path {raw!r} (outside the release tree)")
    return "/".join(parts)


def _content_size(value, where: str) -> int | None:
    if value is None:
        return None
    match = _SIZE.match(str(value))
    if not match:
        raise DownloadError(f"{where}: cannot read contentSize {value!r} (expected e.g. '27719296 B')")
    return int(match.group(1))


def scidb_dataset_id(url: str, timeout: float = 60.0) -> str:
    """The dataset id behind a Science Data Bank DOI or landing URL: the ``dataSetId`` query value of the URL, or of
    the landing page the DOI redirects to."""
    found = _data_set_id(url)
    if found:
        return found
    try:
        resp = requests.get(url, timeout=timeout, allow_redirects=True, stream=True)
        resp.close()
    except requests.RequestException as exc:
        raise DownloadError(f"{url}: cannot resolve the dataset id ({exc}); set download.dataset_id") from exc
    for hop in [*resp.history, resp]:
        found = _data_set_id(hop.headers.get("Location", "")) or _data_set_id(hop.url or "")
        if found:
            return found
    raise DownloadError(f"{url}: no dataSetId in the landing page it leads to ({resp.url}); set download.dataset_id")


def _data_set_id(url: str) -> str | None:
    match = re.search(r"[?&]dataSetId=([0-9A-Za-z]+)", url, re.IGNORECASE)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------- download
def fetch_files(files: list[HostFile], cache: Path, *, verify: bool = True, progress: bool = True) -> dict[str, Path]:
    """Download ``files`` into ``cache`` (at their paths), resumably; with ``verify`` each must match the size and
    checksum its host lists (a file the host lists without a checksum is refused). Returns {path: local file}."""
    if verify:
        unverifiable = [f.path for f in files if not (f.md5 or f.sha256)]
        if unverifiable:
            raise DownloadError(f"the host publishes no checksum for {', '.join(unverifiable[:5])}"
                                f"{' ...' if len(unverifiable) > 5 else ''}: set download.verify: false to install "
                                f"them unverified")
    fetched = {}
    for f in tqdm(files, desc="files", unit="file", disable=not progress or len(files) < 2):
        dest = _inside(cache, f.path)
        check = {"expected_md5": f.md5, "expected_sha256": f.sha256, "expected_size": f.size} if verify else {}
        fetched[f.path] = download_file(f.url, dest, progress=progress, **check)
    return fetched


def _inside(root: Path, rel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise DownloadError(f"refusing file path {rel!r} outside {root}")
    return Path(root, *parts)


def write_manifest(tree: Path, host: str, source: str, files: list[HostFile], answer: object) -> Path:
    """Save what the host published (its answer and the files taken from it) as ``tree/MANIFEST``."""
    path = Path(tree) / MANIFEST
    path.write_text(json.dumps({"host": host, "source": source, "files": [asdict(f) for f in files],
                                "answer": answer}, indent=1, sort_keys=True) + "\n")
    return path


def select(files: list[HostFile], names: list[str], where: str, optional: tuple[str, ...] = ()) -> list[HostFile]:
    """The files named ``names`` (matched on their path's last part); DownloadError naming any missing required one."""
    by_name = {PurePosixPath(f.path).name: f for f in files}
    missing = [n for n in names if n not in by_name and n not in optional]
    if missing:
        raise DownloadError(f"{where} lists no {', '.join(missing)} (it lists {', '.join(sorted(by_name)[:20])})")
    return [by_name[n] for n in names if n in by_name]


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
