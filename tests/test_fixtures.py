"""The real-format fixtures in tests/fixtures are part of the repository: every file listed with a SHA-256 in
tests/fixtures/PROVENANCE.md exists and has that size and hash, the PTB-XL files match ptbxl/SHA256SUMS.txt, no file
is left unlisted, and (inside a git checkout) git tracks every file without line-ending conversion, so a fresh clone
has them byte for byte."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PROVENANCE = FIXTURES / "PROVENANCE.md"
SHA_LINE = re.compile(r"^(?P<sha>[0-9a-f]{64})\s+(?P<size>\d+)\s+(?P<path>\S.*?)\s*$")
#: documentation that lives beside the fixture files and is not itself a fixture
DOCS = {"PROVENANCE.md", "LICENSES.md"}


def provenance_hashes() -> dict[str, tuple[str, int]]:
    """``{path: (sha256, size)}`` from the hash list (the last fenced block) at the end of PROVENANCE.md."""
    if not PROVENANCE.is_file():
        return {}
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", PROVENANCE.read_text(encoding="utf-8"), flags=re.S | re.M)
    if not blocks:
        return {}
    listed = {}
    for line in blocks[-1].splitlines():
        m = SHA_LINE.match(line)
        if m:
            listed[m["path"]] = (m["sha"], int(m["size"]))
    return listed


def sha256sums(path: Path) -> dict[str, str]:
    """``{path relative to the list's folder: sha256}`` from a ``sha256sum`` list."""
    pairs = (line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name.strip().lstrip("*"): sha for sha, name in pairs}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LISTED = provenance_hashes()


def test_provenance_lists_the_fixtures():
    assert FIXTURES.is_dir(), (f"{FIXTURES} is missing: the real-format fixtures are part of the repository "
                               "(restore them from git)")
    assert PROVENANCE.is_file(), f"{PROVENANCE} is missing"
    assert (FIXTURES / "LICENSES.md").is_file(), f"{FIXTURES / 'LICENSES.md'} is missing"
    assert len(LISTED) >= 16, f"the SHA-256 list at the end of {PROVENANCE} has only {len(LISTED)} entries"


@pytest.mark.parametrize("rel", sorted(LISTED))
def test_listed_fixture_has_its_sha256(rel):
    sha, size = LISTED[rel]
    path = FIXTURES / rel
    assert path.is_file(), f"{path} (listed in PROVENANCE.md) is missing: the fixtures are part of the repository"
    assert path.stat().st_size == size, f"{rel}: {path.stat().st_size} bytes, PROVENANCE.md says {size}"
    assert file_sha256(path) == sha, f"{rel}: SHA-256 differs from PROVENANCE.md"


def test_ptbxl_files_match_their_sha256sums():
    sums = FIXTURES / "ptbxl" / "SHA256SUMS.txt"
    assert sums.is_file(), f"{sums} is missing"
    listed = sha256sums(sums)
    assert len(listed) == 13
    for rel, sha in listed.items():
        path = sums.parent / rel
        assert path.is_file(), f"{path} (listed in ptbxl/SHA256SUMS.txt) is missing"
        assert file_sha256(path) == sha, f"ptbxl/{rel}: SHA-256 differs from ptbxl/SHA256SUMS.txt"


def test_every_fixture_file_is_listed():
    covered = set(LISTED) | {f"ptbxl/{rel}" for rel in sha256sums(FIXTURES / "ptbxl" / "SHA256SUMS.txt")}
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file()} - DOCS
    assert not on_disk - covered, f"fixture files with no SHA-256 in PROVENANCE.md: {sorted(on_disk - covered)}"


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=FIXTURES, capture_output=True, text=True, check=False)


def test_fixtures_are_tracked_by_git():
    """Only this test depends on git: it is skipped when the tests do not run inside a git checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != FIXTURES.parents[1]:
        pytest.skip("not inside a git checkout of this repository")
    on_disk = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*") if p.is_file())
    tracked = set(_git("ls-files", "-z", "--", ".").stdout.split("\0")) - {""}
    untracked = [rel for rel in on_disk if rel not in tracked]
    assert not untracked, (f"fixture files not tracked by git (a fresh clone would lack them; `git add "
                           f"tests/fixtures`, and check .gitignore): {untracked}")
    attrs = _git("check-attr", "text", "--", *on_disk).stdout.splitlines()
    converted = [line for line in attrs if not line.endswith(": text: unset")]
    assert not converted, (f"fixture files git may convert (.gitattributes must say `tests/fixtures/** -text`): "
                           f"{converted}")
