"""The code a pipeline job runs, derived from imports. The Snakemake rules declare its version (:func:`code_version`,
a digest of the files' contents) as the job's ``code`` parameter, so that an edit to a module reruns exactly the jobs
that run it (Snakemake's ``params`` rerun trigger) and a file whose time alone changed reruns nothing; the DVC export
lists the files themselves (:func:`files_of`) as the stage's dependencies.

What counts (docs/architecture.md, "Code versions"):

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
pipeline and checks that every module a job imported is among the files of its declared version. What a module
imports is remembered between runs (:data:`CACHE`, keyed by the module's source and the package's file list), so
planning a pipeline parses only the modules that changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from .diskcache import DiskCache
from .registry import ROOT, module_path, source_files

PACKAGE = ROOT.name


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


DISPATCHER = f"{PACKAGE}.cli"


#: what each module imports, keyed by the module's name, source and the package's file list (whether
#: ``from . import x`` names a module depends on which files exist)
CACHE = DiskCache("imports.json")


@functools.cache
def _tree_listing() -> str:
    return "\n".join(p.relative_to(ROOT).as_posix() for p in source_files())


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
    if isinstance(cached, list):
        return frozenset(cached)
    found = _parse_imports(module, path, source, top_level_only)
    CACHE.put(key, sorted(found))
    return found


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
    return [name for name, _ in _code_files(modules)]


@functools.cache
def _code_files(modules: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    every_command = sorted(imports_of(DISPATCHER, top_level_only=True))
    paths = (module_path(m) for m in closure(*every_command, *modules))
    return tuple(sorted((f"src/{path.relative_to(ROOT.parent).as_posix()}", path) for path in paths))


#: the files of every version :func:`code_version` gave in this process
_VERSIONS: dict[str, tuple[str, ...]] = {}


def code_version(*modules: str) -> str:
    """The version of the code of :func:`code_files` of ``modules``: the SHA-256 of the files' names and contents,
    hexadecimal. It changes when a file of the closure is edited, added or removed, not when a file is touched."""
    return _code_version(modules)


@functools.cache
def _code_version(modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name, path in _code_files(modules):
        digest.update(f"{name}\0{_file_digest(path)}\n".encode())
    version = digest.hexdigest()
    _VERSIONS[version] = tuple(name for name, _ in _code_files(modules))
    return version


@functools.cache
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_of(version: str) -> list[str]:
    """The files (as :func:`code_files` names them) of a version that :func:`code_version` gave in this process."""
    try:
        return list(_VERSIONS[version])
    except KeyError:
        raise KeyError(f"no code version {version!r} was computed in this process") from None
