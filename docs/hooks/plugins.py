"""MkDocs hook: the plugins of the tree as it is, listed from the registries when the site is built.

``<!-- physiossl:plugins -->`` becomes one table per registry: every ``Registry("kind", "package", ...)`` created in
the package's source is found, and its plugins are read the way the registry reads them (from the source, without
importing torch): name, the module and object that implement it. Dataset sources that are discovered as modules of a
``sources`` package rather than through a registry are listed from those modules.

``<!-- physiossl:method-settings -->`` becomes one table per SSL method: the keys of its ``schema`` with their types
and defaults, as the method class declares them.

:func:`render_plugins` and :func:`render_method_settings` work without MkDocs.
"""

from __future__ import annotations

import ast
import html
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "physiossl"
PLUGINS = "<!-- physiossl:plugins -->"
METHOD_SETTINGS = "<!-- physiossl:method-settings -->"


def registries(package: Path = PACKAGE) -> list[tuple[str, tuple[str, ...], str]]:
    """``(kind, packages, where)`` of every ``Registry("kind", "pkg", ...)`` call with literal arguments."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Registry"
                    and node.args and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
                values = [a.value for a in node.args]
                found.append((values[0], tuple(values[1:]), path.relative_to(package.parent).as_posix()))
    return found


def _registry_class():
    src = str(PACKAGE.parent)
    if src not in sys.path:
        sys.path.insert(0, src)
    from physiossl.registry import Registry
    return Registry


def _source_modules(package: Path = PACKAGE) -> list[tuple[str, str]]:
    """``(name, module file)`` of dataset-source modules found as files of a ``sources`` package."""
    out = []
    for folder in sorted(p for p in package.rglob("sources") if (p / "__init__.py").is_file()):
        out += [(p.stem, p.relative_to(package.parent).as_posix()) for p in sorted(folder.glob("*.py"))
                if not p.stem.startswith("_")]
    return out


def render_plugins() -> str:
    Registry = _registry_class()
    lines = []
    covered = set()
    for kind, packages, where in registries():
        registry = Registry(kind, *packages)
        covered.update(packages)
        plugins = registry.plugins()
        lines += [f"**{kind.replace('_', ' ')}** — the registry in `{where}`, plugins in "
                  + ", ".join(f"`{p}`" for p in packages), "",
                  "| name | declared in |", "|---|---|"]
        lines += [f"| `{p.name}` | `{p.module}.{p.object}` |" for p in sorted(plugins.values(), key=lambda p: p.name)]
        lines.append("")
    sources = [(n, f) for n, f in _source_modules()
               if ".".join(Path(f).with_suffix("").parts[:-1]) not in covered]
    if sources:
        lines += ["**dataset source** — modules of the `sources` package, discovered by file name", "",
                  "| name | module |", "|---|---|", *(f"| `{n}` | `{f}` |" for n, f in sources), ""]
    return "\n".join(lines)


def _cell(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return html.escape(text).replace("|", "&#124;")


def _type(spec: dict) -> str:
    kind = spec.get("type", "any" if "enum" not in spec else None)
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    bounds = [f"{sign} {spec[k]}" for k, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                                                   ("exclusiveMaximum", "<")) if k in spec]
    if "enum" in spec:
        bounds.append("one of " + ", ".join(map(str, spec["enum"])))
    return ", ".join([k for k in (kind, *bounds) if k])


def render_method_settings() -> str:
    Registry = _registry_class()
    kinds = [(k, p) for k, p, _ in registries() if k == "method"]
    if not kinds:
        return "*(no method registry found)*"
    lines = []
    for plugin in sorted(Registry("method", *kinds[0][1]).plugins().values(), key=lambda p: p.name):
        schema = plugin.attrs.get("schema") or {}
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        encoders = plugin.attrs.get("encoders")
        lines += [f"### `{plugin.name}`", "",
                  f"`{plugin.module}.{plugin.object}`; encoders: "
                  + (", ".join(f"`{e}`" for e in encoders) if isinstance(encoders, (list, tuple)) else "any") + ".", ""]
        if props:
            lines += ["| key | type | default |", "|---|---|---|"]
            lines += [f"| `{key}` | {_cell(_type(spec))} | "
                      + (f"<code>{_cell(spec['default'])}</code>" if "default" in spec else "required") + " |"
                      for key, spec in props.items()]
        else:
            lines.append("No keys of its own.")
        lines.append("")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if PLUGINS in markdown:
        markdown = markdown.replace(PLUGINS, render_plugins())
    if METHOD_SETTINGS in markdown:
        markdown = markdown.replace(METHOD_SETTINGS, render_method_settings())
    return markdown


if __name__ == "__main__":
    print(render_plugins())
    print(render_method_settings())
