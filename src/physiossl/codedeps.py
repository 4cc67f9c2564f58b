"""The code a pipeline job runs, derived from imports: the Snakemake rules declare it as the job's ``code`` input,
so a change to a module reruns exactly the jobs that run it.

What counts (docs/architecture.md, "Code inputs"):

1. the job's entry module: the stage module that its ``physiossl`` subcommand runs, and what the dispatcher
   ``physiossl.cli`` imports at its top (every command runs that: the config loader and its checks);
   ``physiossl.cli`` itself counts for no job (it parses arguments and calls the stage);
2. the plugins the job loads by name from a registry (:mod:`physiossl.registry`): its method, encoder, source,
   sleep model or sleep-staging variant, given as module names;
3. every ``physiossl`` module that a counted module imports, by any ``import`` statement, at the top or inside a
   function (a function-level import runs when the function does), with the ``__init__`` of every package on the
   way (Python runs them);
4. nothing else: plugins are never imported by a registry's listing (it reads their source), so a plugin the job
   does not name does not count.

The closure is computed from the source files with :mod:`ast`, without importing anything; a test runs the
pipeline and checks that every module a job imported is among its rule's declared inputs. What a module imports is
remembered between runs (:class:`ImportCache`, keyed by the module's source and the package's file list), so
planning a pipeline parses only the modules that changed.
"""

from __future__ import annotations

import ast
import atexit
import functools
import hashlib
import json
import os
from pathlib import Path

from .registry import ROOT, module_path

PACKAGE = ROOT.name


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


DISPATCHER = f"{PACKAGE}.cli"


class ImportCache:
    """What each module imports, remembered in ``$XDG_CACHE_HOME/physiossl/imports.json`` (default ``~/.cache``).
    An entry's key is the SHA-256 of the module's name, source and the list of the package's files (whether
    ``from . import x`` names a module depends on which files exist), so an edit or a new file is never served a
    stale answer. The file is written atomically at exit when new entries were made; a missing, unreadable or
    unwritable file only means parsing again."""

    MAX_ENTRIES = 4000

    def __init__(self, path: Path | None = None):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.path = path or base / "physiossl" / "imports.json"
        self.entries: dict[str, list[str]] | None = None
        self.new = 0

    def _load(self) -> dict[str, list[str]]:
        if self.entries is None:
            try:
                entries = json.loads(self.path.read_text())
                self.entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def get(self, key: str) -> frozenset[str] | None:
        found = self._load().get(key)
        return frozenset(found) if isinstance(found, list) else None

    def put(self, key: str, modules: frozenset[str]) -> None:
        entries = self._load()
        entries.pop(key, None)
        entries[key] = sorted(modules)
        if self.new == 0:
            atexit.register(self.save)
        self.new += 1

    def save(self) -> None:
        entries = self._load()
        keep = dict(list(entries.items())[-self.MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(keep))
            os.replace(tmp, self.path)
        except OSError:
            pass


CACHE = ImportCache()


@functools.cache
def _tree_listing() -> str:
    return "\n".join(sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")))


@functools.cache
def imports_of(module: str, top_level_only: bool = False) -> frozenset[str]:
    """The ``physiossl`` modules (and their packages) that ``module``'s source imports anywhere (at its top only,
    with ``top_level_only``)."""
    path = module_path(module)
    if path is None:
        raise ValueError(f"no source file for module {module!r}")
    source = path.read_text()
    key = hashlib.sha256(f"{module}\0{top_level_only}\0{_tree_listing()}\0{source}".encode()).hexdigest()
    cached = CACHE.get(key)
    if cached is None:
        cached = _parse_imports(module, path, source, top_level_only)
        CACHE.put(key, cached)
    return cached


def _parse_imports(module: str, path: Path, source: str, top_level_only: bool) -> frozenset[str]:
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    tree = ast.parse(source, filename=str(path))
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base_parts = parts[:len(parts) - node.level + is_package]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names
                              if module_path(f"{base}.{alias.name}") is not None]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                if module_path(name) is not None:
                    found.update([name, *_parents(name)])
    found.discard(module)
    return frozenset(found)


@functools.cache
def closure(*modules: str) -> frozenset[str]:
    """``modules``, their packages and every ``physiossl`` module they import, transitively."""
    seen: set[str] = set()
    todo = [m for module in modules for m in (module, *_parents(module))]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports_of(module) - seen)
    return frozenset(seen)


def code_files(*modules: str) -> list[str]:
    """The source files of :func:`closure` of ``modules`` as the project sees them, ``src/physiossl/...`` relative
    to the project folder (where Snakemake runs), sorted."""
    return list(_code_files(modules))


@functools.cache
def _code_files(modules: tuple[str, ...]) -> tuple[str, ...]:
    every_command = sorted(imports_of(DISPATCHER, top_level_only=True))
    return tuple(sorted(f"src/{module_path(m).relative_to(ROOT.parent).as_posix()}"
                        for m in closure(*every_command, *modules)))
