"""Plugins: SSL methods, encoders, sleep models, sleep-staging variants, augmentations and dataset sources, all
declared one way.

A plugin is a class or function in a module of its kind's package, declared with that kind's decorator
``@register("name", **info)``: the :meth:`Registry.register` of the package's registry, named
``register_<kind>`` where one package holds plugins of several kinds (e.g. ``register_encoder`` and
``register_sleep_model`` in :mod:`physiossl.models`). The
registry reads every declaration from the source files with :mod:`ast`, without importing them:

- the name and the decorator's keyword arguments (``info``);
- for a class, its class-level assignments of literal values (``attrs``, e.g. a method's ``schema``), inherited
  ones included (from base classes defined in the same module or imported from another module of the package
  tree), and its constructor's parameters; for a function, its parameters (``params``: name → default).

So everything that needs only names and metadata (config validation, command-line choices, Snakemake wildcard
constraints, report labels) imports neither torch nor Lightning; :meth:`Plugin.load` imports the module and
returns the object. What a registry read is remembered between runs (:mod:`physiossl.diskcache`), keyed by the
package's sources: a process reads a plugin module's source only after the package changed.

The rules that keep a declaration readable: a plugin module is any module of the package whose name does not start
with ``_``; the name, ``info`` and the class attributes the registry should see are literals (numbers, strings,
tuples, lists, dicts, booleans, None); two plugins of one kind never share a name.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .diskcache import DiskCache

ROOT = Path(__file__).resolve().parent     # the physiossl package
EMPTY = "<no default>"                     # a parameter without a default
NOT_LITERAL = "<not a literal>"            # a default the registry cannot read without running code


class UnknownPlugin(KeyError, ValueError):
    """A name that no plugin of the kind declares (a KeyError and a ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Plugin:
    """One declared plugin (see the module docstring)."""

    kind: str
    name: str
    module: str                      # dotted module name
    object: str                      # the attribute of the module that implements it
    info: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """``info[key]``, else ``attrs[key]``, else ``default``."""
        return self.info.get(key, self.attrs.get(key, default))

    def load(self) -> Any:
        """Import the plugin's module and return the object."""
        return getattr(importlib.import_module(self.module), self.object)


class Registry:
    """The plugins of one ``kind`` declared in the modules of ``packages`` (dotted names under ``physiossl``)."""

    def __init__(self, kind: str, *packages: str, label: str | None = None):
        self.kind, self.packages = kind, packages
        self.label = label or kind.replace("_", " ")   # in messages

    def register(self, name: str, **info: Any) -> Callable[[Any], Any]:
        """The decorator that declares a plugin. At import it checks that the declaration is one the registry
        reads from the source (a literal name in a plugin module of this kind) and sets ``plugin_name``."""
        def decorator(obj: Any) -> Any:
            plugin = self.plugins().get(name)
            if plugin is None or (plugin.module, plugin.object) != (obj.__module__, obj.__name__):
                raise ValueError(f"{self.label} {name!r} ({obj.__module__}.{obj.__name__}) is not declared where "
                                 f"the registry reads it: a literal name in a module of {', '.join(self.packages)} "
                                 "whose name does not start with '_'")
            obj.plugin_name = name
            return obj
        return decorator

    @functools.cache
    def plugins(self) -> dict[str, Plugin]:
        key = hashlib.sha256(f"{self.kind}\0{self.packages}\0{_package_at_start()}".encode()).hexdigest()
        remembered = CACHE.get(key)
        if isinstance(remembered, str):
            try:
                return {fields[1]: Plugin(*fields) for fields in ast.literal_eval(remembered)}
            except (ValueError, TypeError, SyntaxError):
                pass
        found = self._read()
        CACHE.put(key, repr([astuple(plugin) for plugin in found.values()]))
        return found

    def _read(self) -> dict[str, Plugin]:
        found: dict[str, Plugin] = {}
        for package in self.packages:
            folder = ROOT.joinpath(*package.split(".")[1:])
            for path in sorted(folder.glob("*.py")):
                if path.stem.startswith("_"):
                    continue
                for plugin in _declared(self.kind, f"{package}.{path.stem}", path):
                    if plugin.name in found:
                        raise ValueError(f"{self.label} {plugin.name!r} declared twice: in {found[plugin.name].module} "
                                         f"and {plugin.module}")
                    found[plugin.name] = plugin
        return found

    def names(self) -> list[str]:
        return sorted(self.plugins())

    def __contains__(self, name: object) -> bool:
        return name in self.plugins()

    def __iter__(self):
        return iter(self.names())

    def __getitem__(self, name: str) -> Plugin:
        try:
            return self.plugins()[name]
        except KeyError:
            raise UnknownPlugin(f"unknown {self.label} {name!r} (available: {self.names()})") from None

    def load(self, name: str) -> Any:
        return self[name].load()


# ------------------------------------------------------------------------------------------------- reading source
#: the plugins of each registry, as the ``repr`` of their fields (literals, read back with ``ast.literal_eval``),
#: keyed by the registry's kind and packages and :func:`package_digest`
CACHE = DiskCache("plugins.json")


def source_files() -> list[Path]:
    """The package's Python files, sorted."""
    return sorted(ROOT.rglob("*.py"))


def package_digest() -> str:
    """The SHA-256 of the package's source files (names and contents) as they are now."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _package_at_start() -> str:
    return package_digest()


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL


def _register_call(decorator: ast.expr, kind: str) -> ast.Call | None:
    """The ``register(...)`` or ``register_<kind>(...)`` call of a decorator, if it is one."""
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return decorator if name in ("register", f"register_{kind}") else None


def _params(func: ast.FunctionDef, drop_self: bool) -> dict[str, Any]:
    args = func.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [EMPTY] * (len(positional) - len(args.defaults)) + [_literal(d) for d in args.defaults]
    out = dict(zip((a.arg for a in positional), defaults))
    out.update({a.arg: EMPTY if d is None else _literal(d) for a, d in zip(args.kwonlyargs, args.kw_defaults)})
    if drop_self:
        out.pop(next(iter(out), None), None)
    return out


@functools.cache
def _module_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@functools.cache
def module_path(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "physiossl":
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve(module: str | None, level: int, here: str, here_is_package: bool) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in module ``here``."""
    if not level:
        return module or ""
    parts = here.split(".")
    package = parts[:len(parts) - level + here_is_package]
    return ".".join([*package, *([module] if module else [])])


@functools.cache
def _class_info(module: str, cls: str, path: Path | None = None) -> tuple[dict, dict | None]:
    """(literal class attributes, constructor parameters or None) of class ``cls`` of ``module``, inherited
    ones included (bases in the same module, or imported from a module of the package tree). ``path``: the
    module's file, when it is not where ``module`` would be."""
    path = path or module_path(module)
    if path is None:
        return {}, None
    tree = _module_tree(path)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None:           # imported into this module: follow the import
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    if (alias.asname or alias.name) == cls:
                        return _class_info(_resolve(stmt.module, stmt.level, module, path.name == "__init__.py"),
                                           alias.name)
        return {}, None
    attrs: dict = {}
    params = None
    for base in reversed(node.bases):          # the first base wins, as in the method resolution order
        if isinstance(base, ast.Name):
            base_attrs, base_params = _class_info(module, base.id, path)
            attrs.update(base_attrs)
            params = base_params if base_params is not None else params
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            attrs[stmt.targets[0].id] = _literal(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            attrs[stmt.target.id] = _literal(stmt.value)
        elif isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
            params = _params(stmt, drop_self=True)
    return attrs, params


def function_params(module: str, function: str) -> dict[str, Any]:
    """The parameters (name → default) of the module-level function ``function`` of ``module``, read from its
    source; KeyError when there is none."""
    path = module_path(module)
    for node in _module_tree(path).body if path else []:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return _params(node, drop_self=False)
    raise KeyError(f"{module} has no function {function!r}")


def _declared(kind: str, module: str, path: Path) -> list[Plugin]:
    plugins = []
    for node in _module_tree(path).body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for decorator in node.decorator_list:
            call = _register_call(decorator, kind)
            if call is None:
                continue
            if not (call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                raise ValueError(f"{path}:{call.lineno}: a {kind} is registered with a name that is not "
                                 "a string literal")
            info = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
            if isinstance(node, ast.ClassDef):
                attrs, params = _class_info(module, node.name, path)
            else:
                attrs, params = {}, _params(node, drop_self=False)
            plugins.append(Plugin(kind, call.args[0].value, module, node.name, info, attrs, params or {}))
    return plugins
