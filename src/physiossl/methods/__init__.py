"""SSL methods by name. A method is one module in this package that registers a :class:`SSLMethod`
subclass with :func:`register`; modules are discovered automatically, so adding a method is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from .base import SSLMethod

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
