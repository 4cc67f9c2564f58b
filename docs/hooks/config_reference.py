"""MkDocs hook: the configuration reference, rendered from the config schema when the site is built.

A page that contains the marker ``<!-- physiossl:config-reference -->`` gets, in its place, one table per section of
``src/physiossl/schema.yaml``: every key path, its type and constraints, whether it is required, its default, its
allowed values and its ``description``. Nothing of the schema is copied by hand into the docs.

:func:`render` works without MkDocs (``python docs/hooks/config_reference.py`` prints the reference).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path("src/physiossl/schema.yaml")     # relative to the repository root
MARKER = "<!-- physiossl:config-reference -->"

# how a map's keys are named in key paths (the map's own key → placeholder); any other map: <name>
PLACEHOLDERS = {"datasets": "<dataset>", "pools": "<pool>", "methods": "<method>", "overrides": "<method>",
                "noise": "<transform>"}


@dataclass
class Key:
    """One key of the configuration: its dotted path (map keys as ``<placeholder>``) and its resolved schema."""

    path: str
    node: dict
    required: str = ""                  # "yes", a condition ("when mode is local") or ""
    ref: str | None = None              # the $defs entry it refers to, if any
    leaf: bool = True
    notes: list[str] = field(default_factory=list)


def load_schema(path: Path | None = None) -> dict:
    path = Path(path) if path else ROOT / SCHEMA
    return yaml.safe_load(path.read_text())


def _lookup(root: dict, ref: str) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref are supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def resolve(node: dict, root: dict) -> tuple[dict, str | None]:
    """``node`` with its ``$ref`` chain merged in (the node's own keys win; properties and required are united),
    and the name of the first ``$defs`` entry it refers to."""
    if not isinstance(node, dict) or "$ref" not in node:
        return node, None
    target, _ = resolve(_lookup(root, node["$ref"]), root)
    merged = dict(target)
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "properties":
            merged["properties"] = {**target.get("properties", {}), **value}
        elif key == "required":
            merged["required"] = list(dict.fromkeys([*target.get("required", []), *value]))
        else:
            merged[key] = value
    return merged, node["$ref"].rsplit("/", 1)[-1]


def _conditions(node: dict) -> dict[str, str]:
    """Keys that ``allOf: [{if: {properties: {k: {const: v}}}, then: {required: [...]}}]`` requires: key → condition."""
    out = {}
    for item in node.get("allOf", []):
        cond = item.get("if", {}).get("properties", {})
        then = item.get("then", {}).get("required", [])
        words = " and ".join(f"`{k}` is `{v.get('const')}`" for k, v in cond.items() if "const" in v)
        for key in then:
            out[key] = f"when {words}" if words else "conditionally"
    return out


def iter_keys(schema: dict) -> list[Key]:
    """Every key of the schema, depth first in schema order; ``leaf`` is False for keys with keys of their own."""
    keys: list[Key] = []

    def walk(node: dict, path: list[str], required: str, parent_key: str | None) -> None:
        node, ref = resolve(node, schema)
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        mapping = isinstance(extra, dict) and not props
        key = Key(".".join(path), node, required, ref, leaf=not props and not mapping)
        if path:
            keys.append(key)
        needed = set(node.get("required", []))
        conditional = _conditions(node)
        for name, child in props.items():
            req = "yes" if name in needed else conditional.get(name, "")
            walk(child, path + [name], req, name)
        if mapping:
            placeholder = PLACEHOLDERS.get(parent_key or "", "<name>")
            walk(extra, path + [placeholder], "", None)

    walk(schema, [], "", None)
    return keys


# ------------------------------------------------------------------------------------------------ formatting
_LITERAL = {ord(c): f"&#{ord(c)};" for c in "|`\\*_[]{}#!"}   # characters Markdown would read as syntax


def _html(text: str) -> str:
    """Text that Markdown leaves as it is, for a table cell: HTML-escaped, and Markdown's syntax characters as
    character references."""
    return html.escape(str(text), quote=False).translate(_LITERAL)


def _text(value: str) -> str:
    """Text for a table cell, as HTML: `code spans` become <code>, everything is escaped (no pipe splits a cell)."""
    parts = " ".join(str(value).split()).split("`")
    if len(parts) % 2 == 0:                         # an unpaired backtick: no code spans
        return _html("`".join(parts))
    return "".join(_html(p) if i % 2 == 0 else f"<code>{_html(p)}</code>" for i, p in enumerate(parts))


def _code(value) -> str:
    return f"<code>{_html(value if isinstance(value, str) else json.dumps(value))}</code>"


def _bounds(node: dict) -> list[str]:
    out = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            out.append(f"{sign} {node[key]}")
    if node.get("minLength") == 1:
        out.append("non-empty")
    elif "minLength" in node:
        out.append(f"at least {node['minLength']} characters")
    if "minProperties" in node:
        out.append("non-empty" if node["minProperties"] == 1 else f"at least {node['minProperties']} entries")
    lo, hi = node.get("minItems"), node.get("maxItems")
    if lo is not None and lo == hi:
        out.append(f"exactly {lo} items")
    else:
        if lo is not None:
            out.append("non-empty" if lo == 1 else f"at least {lo} items")
        if hi is not None:
            out.append(f"at most {hi} items")
    if node.get("uniqueItems"):
        out.append("no duplicates")
    return out


def named_types(schema: dict) -> list[str]:
    """The ``$defs`` entries shown as value types of their own (a description and no keys of their own)."""
    return [name for name, d in (schema.get("$defs") or {}).items() if d.get("description") and "properties" not in d]


def type_of(node: dict, schema: dict, depth: int = 0, named: bool = True) -> str:
    """A short type description as cell HTML: ``integer, ≥ 1``, ``array of string``,
    ``integer or <code>auto</code>``."""
    node, ref = resolve(node, schema)
    if named and ref in named_types(schema):
        return f'<a href="#value-types">{_html(ref)}</a>'
    if "const" in node:
        return _code(node["const"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            return " or ".join(type_of(alt, schema, depth + 1) for alt in node[combinator])
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    text = " or ".join(kinds) if kinds else ("object" if "properties" in node else "any")
    if "array" in kinds and isinstance(node.get("items"), dict) and depth < 2:
        text = f"array of {type_of(node['items'], schema, depth + 1)}"
    bounds = [_html(b) for b in _bounds(node)]
    if "pattern" in node:
        bounds.append(f"matching {_code(node['pattern'])}")
    return f"{text}, {', '.join(bounds)}" if bounds else text


def allowed_of(node: dict, schema: dict) -> str:
    node, _ = resolve(node, schema)
    items = node.get("items")
    items = resolve(items, schema)[0] if isinstance(items, dict) else {}
    values = node.get("enum") or items.get("enum")
    return ", ".join(_code(v) for v in values) if values else ""


def _row(key: Key, schema: dict) -> str:
    node = key.node
    default = _code(node["default"]) if "default" in node else ""
    named = key.ref in named_types(schema)
    kind = f'<a href="#value-types">{_html(key.ref)}</a>' if named else type_of(node, schema)
    cells = [_code(key.path), kind, _text(key.required), default, allowed_of(node, schema),
             _text(node.get("description", ""))]
    return "| " + " | ".join(cells) + " |"


HEADER = ["| key | type | required | default | allowed values | description |",
          "|---|---|---|---|---|---|"]


def _top_rules(schema: dict) -> list[str]:
    lines = []
    if schema.get("required"):
        lines.append("- Required top-level keys: " + ", ".join(f"`{k}`" for k in schema["required"]) + ".")
    if schema.get("anyOf"):
        groups = [" and ".join(f"`{k}`" for k in alt.get("required", [])) for alt in schema["anyOf"]]
        lines.append("- At least one of: " + ", ".join(groups) + ".")
    for key, needs in (schema.get("dependentRequired") or {}).items():
        lines.append(f"- With `{key}`, also " + " and ".join(f"`{k}`" for k in needs) + ".")
    if schema.get("additionalProperties") is False:
        lines.append("- No other keys: an unknown key anywhere fails validation, naming it.")
    return lines


def render(schema: dict | None = None, source: str = str(SCHEMA)) -> str:
    """The reference as Markdown: the top-level rules, the shared value types, then one table per section."""
    schema = load_schema() if schema is None else schema
    keys = iter_keys(schema)
    out = [f"Generated from `{source}` when this site is built.", ""]
    if schema.get("description"):
        out += [_text(schema["description"]), ""]
    out += _top_rules(schema) + [""]
    shared = named_types(schema)
    if shared:
        out += ["## Value types", "", "| type | definition | allowed values | description |", "|---|---|---|---|"]
        defs = schema["$defs"]
        out += [f"| {_html(name)} | {type_of(defs[name], schema, named=False)} | {allowed_of(defs[name], schema)} | "
                f"{_text(defs[name]['description'])} |" for name in shared]
        out.append("")
    top_leaves = [k for k in keys if "." not in k.path and k.leaf]
    if top_leaves:
        out += ["## Top-level keys", "", *HEADER, *(_row(k, schema) for k in top_leaves), ""]
    for section in [k for k in keys if "." not in k.path and not k.leaf]:
        rows = [k for k in keys if k.path == section.path or k.path.startswith(section.path + ".")]
        out += [f"## {section.path}", "", *HEADER, *(_row(k, schema) for k in rows), ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ MkDocs hook
def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())


if __name__ == "__main__":
    print(render())
