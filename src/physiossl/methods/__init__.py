"""SSL methods by name. A method is one module in this package that registers a :class:`SSLMethod`
subclass with :func:`register`; modules are discovered automatically (except ``base`` and modules whose name
starts with ``_``), so adding a method is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from jsonschema import Draft202012Validator

from ..augment.ecg import validate_augment
from ..models import ENCODERS, encoder_args
from .base import BASE_SCHEMA, SSLMethod

METHODS: dict[str, type[SSLMethod]] = {}


def register(name: str):
    def decorator(cls: type[SSLMethod]) -> type[SSLMethod]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = cls
        cls.method_name = name
        return cls
    return decorator


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _discover()
    return sorted(METHODS)


def get_method(name: str) -> type[SSLMethod]:
    _discover()
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r} (available: {sorted(METHODS)})")
    return METHODS[name]


def method_schema(name: str) -> dict:
    """The full JSON schema of a method's config: ``BASE_SCHEMA`` ∪ the method's ``schema``, no other keys."""
    cls = get_method(name)
    return {
        "type": "object",
        "properties": {**BASE_SCHEMA["properties"], **cls.schema.get("properties", {})},
        "required": list(dict.fromkeys([*BASE_SCHEMA["required"], *cls.schema.get("required", [])])),
        "additionalProperties": False,
    }


def validate_method_config(name: str, cfg: dict, key: str, encoder: str | None = None) -> list[str]:
    """Problems of the config ``cfg`` of method ``name`` found at config key ``key`` (e.g.
    ``pretrain.methods.byol``), each as ``config key '<key>.<path>': <message>``; empty when it is valid.

    Checks the JSON schema (unknown, missing and mistyped keys), the augment list, the encoder against the
    method's allowed encoders, ``encoder_args`` against the encoder's constructor, and the method's own checks
    (:meth:`SSLMethod.check_config`, on ``cfg`` with the schema's defaults filled in). ``encoder`` is the encoder
    used when ``cfg`` names none (the pretrain stage's ``encoder``).
    """
    _discover()
    if name not in METHODS:
        return [f"config key '{key}': unknown method {name!r} (available: {sorted(METHODS)})"]
    if not isinstance(cfg, dict):
        return [f"config key '{key}': expected a mapping of method settings, got {type(cfg).__name__}"]
    schema = method_schema(name)
    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "".join(f".{p}" for p in error.absolute_path)
        if error.validator == "additionalProperties" and not path:
            problems += [f"config key '{key}.{k}': unknown key (allowed: {sorted(schema['properties'])})"
                         for k in error.instance if k not in schema["properties"]]
        elif error.validator == "required" and not path:
            problems += [f"config key '{key}.{k}': missing required key" for k in error.validator_value
                         if k not in error.instance]
        else:
            problems.append(f"config key '{key}{path}': {error.message}")
    if isinstance(cfg.get("augment"), list):
        problems += validate_augment(cfg["augment"], f"{key}.augment")
    allowed = METHODS[name].encoders
    chosen = cfg.get("encoder", encoder)
    if allowed is not None and chosen not in allowed:
        problems.append(f"config key '{key}.encoder': method {name!r} needs encoder "
                        f"{' or '.join(map(repr, allowed))}, got {chosen!r}")
    args = cfg.get("encoder_args")
    if isinstance(chosen, str) and chosen in ENCODERS and isinstance(args, dict):
        accepted = encoder_args(chosen)
        problems += [f"config key '{key}.encoder_args.{k}': encoder {chosen!r} takes no argument {k!r} "
                     f"(accepted: {accepted})" for k in args if k not in accepted]
    problems += METHODS[name].check_config({**METHODS[name].defaults(), **cfg}, key)
    return problems
