"""SSL methods by name (:mod:`physiossl.registry`). A method is a :class:`physiossl.methods.base.SSLMethod` subclass
declared with ``@register("name")`` in a module of this package (not ``base``, no leading ``_``), with its config
keys in the class attribute ``schema`` and the encoders it works with in ``encoders`` (literals, which the registry
reads without importing the module), so adding a method is adding a file. Checking a method config imports no
torch; :meth:`SSLMethod.check_config` (checks that need the method's code) runs when the method is built and in
``validate_method_config(..., deep=True)``."""

from __future__ import annotations

from jsonschema import Draft202012Validator

from ..augment.validate import validate_augment
from ..models import ENCODERS, encoder_args
from ..registry import Registry

METHODS = Registry("method", "physiossl.methods")

#: the config keys every method takes (see :class:`physiossl.methods.base.SSLMethod`)
BASE_SCHEMA: dict = {
    "properties": {
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "weight_decay": {"type": "number", "minimum": 0},
        "warmup_epochs": {"type": "integer", "minimum": 0},
        "augment": {"type": "array"},
        "encoder": {"type": "string", "enum": ENCODERS.names()},
        "encoder_args": {"type": "object"},
        "crop_s": {"type": "number", "exclusiveMinimum": 0},
        "batch_size": {"type": "integer", "minimum": 2},
    },
    "required": ["lr", "weight_decay", "warmup_epochs", "augment"],
}


def register(name: str):
    """Declare an SSL method (sets ``method_name``)."""
    declare = METHODS.register(name)

    def decorator(cls):
        cls = declare(cls)
        cls.method_name = name
        return cls
    return decorator


def available() -> list[str]:
    return METHODS.names()


def get_method(name: str):
    """The method class ``name`` (imports its module)."""
    return METHODS.load(name)


def method_defaults(name: str) -> dict:
    """The schema defaults of method ``name``'s own keys."""
    return {k: v["default"] for k, v in method_schema(name)["properties"].items() if "default" in v}


def method_schema(name: str) -> dict:
    """The full JSON schema of a method's config: ``BASE_SCHEMA`` ∪ the method's ``schema``, no other keys."""
    own = METHODS[name].get("schema") or {}
    return {
        "type": "object",
        "properties": {**BASE_SCHEMA["properties"], **own.get("properties", {})},
        "required": list(dict.fromkeys([*BASE_SCHEMA["required"], *own.get("required", [])])),
        "additionalProperties": False,
    }


def validate_method_config(name: str, cfg: dict, key: str, encoder: str | None = None, deep: bool = False) -> list[str]:
    """Problems of the config ``cfg`` of method ``name`` found at config key ``key`` (e.g.
    ``pretrain.methods.byol``), each as ``config key '<key>.<path>': <message>``; empty when it is valid.

    Checks the JSON schema (unknown, missing and mistyped keys), the augment list, the encoder against the
    method's allowed encoders, ``encoder_args`` against the encoder's constructor, and the method's own checks
    (:meth:`SSLMethod.check_config`, on ``cfg`` with the schema's defaults filled in) with ``deep`` (which imports
    the method's module). ``encoder`` is the encoder used when ``cfg`` names none (the pretrain stage's ``encoder``).
    """
    if name not in METHODS:
        return [f"config key '{key}': unknown method {name!r} (available: {METHODS.names()})"]
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
    allowed = METHODS[name].get("encoders")
    chosen = cfg.get("encoder", encoder)
    if allowed is not None and chosen not in allowed:
        problems.append(f"config key '{key}.encoder': method {name!r} needs encoder "
                        f"{' or '.join(map(repr, allowed))}, got {chosen!r}")
    args = cfg.get("encoder_args")
    if isinstance(chosen, str) and chosen in ENCODERS and isinstance(args, dict):
        accepted = encoder_args(chosen)
        problems += [f"config key '{key}.encoder_args.{k}': encoder {chosen!r} takes no argument {k!r} "
                     f"(accepted: {accepted})" for k in args if k not in accepted]
    if deep:
        problems += get_method(name).check_config({**method_defaults(name), **cfg}, key)
    return problems
