"""Config checks of augmentation pipelines and robustness noise specs, from the transforms' declarations
(:mod:`physiossl.registry`: constructor parameters with their defaults, and the validation attributes of
:class:`physiossl.augment.ecg.Transform` and :class:`physiossl.augment.audio.AudioTransform`), without importing
torch. Every message reads ``config key '<key>...': ...``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

from ..registry import Plugin, Registry
from . import AUDIO_TRANSFORMS, TRANSFORMS

INJECTED = ("fs",)                      # constructor arguments set from the data, never config keys
SET_BY_NOISE = ("p", "fixed_amplitude")  # set by the robustness protocol (build_noise)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def transform_params(plugin: Plugin, noise: bool = False) -> dict[str, Any]:
    """Config parameters of a transform (constructor arguments except injected ones) → defaults."""
    skip = {*INJECTED, *(SET_BY_NOISE if noise else ())}
    return {n: d for n, d in plugin.params.items() if n not in skip}


def noise_transforms() -> list[str]:
    """The physiological noise transforms: those with a ``level_param``."""
    return [name for name in TRANSFORMS.names() if TRANSFORMS[name].get("level_param") is not None]


def check_value(plugin: Plugin, name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` of a transform (None when it is)."""
    if name == "p":
        ok = is_number(value) and 0 <= value <= 1
        return None if ok else f"parameter 'p' must be a probability in [0, 1], got {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"parameter '{name}' must be true or false, got {value!r}"
    if name in plugin.get("choice_params", ()):
        values = [value] if is_number(value) else value
        if isinstance(values, (list, tuple)) and values and all(is_number(v) and v > 0 for v in values):
            return None
        return f"parameter '{name}' must be a positive number or a non-empty list of them, got {value!r}"
    if isinstance(default, tuple):
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)):
            return f"parameter '{name}' must be a range [lo, hi] of two numbers, got {value!r}"
        lo, hi = value
        if lo > hi:
            return f"parameter '{name}' range [lo, hi] needs lo <= hi, got {list(value)}"
        if name in plugin.get("positive_params", ()) and lo <= 0:
            return f"parameter '{name}' range must be positive, got {list(value)}"
        if lo < 0:
            return f"parameter '{name}' range must be non-negative, got {list(value)}"
        if name in plugin.get("fraction_params", ()) and hi > 1:
            return f"parameter '{name}' range is a fraction of the length and must lie in [0, 1], got {list(value)}"
        return None
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"parameter '{name}' must be a non-negative integer, got {value!r}"
    ok = is_number(value) and value >= 0
    return None if ok else f"parameter '{name}' must be a non-negative number, got {value!r}"


def check_transform(where: str, name: Any, params: Any, registry: Registry, allowed: list[str],
                    noise: bool) -> list[str]:
    """Problems of one transform ``name: params`` of ``registry`` (one of ``allowed``) at config key ``where``."""
    if name not in allowed:
        return [f"config key '{where}': unknown transform '{name}'; valid: {', '.join(allowed)}"]
    if params is None:
        return []
    if not isinstance(params, Mapping):
        return [f"config key '{where}': parameters must be a mapping (or {{}} for defaults), got {params!r}"]
    plugin = registry[name]
    known = transform_params(plugin, noise)
    problems = []
    for key, value in params.items():
        if key not in known:
            note = " (fs is set from the data's sampling rate)" if key in INJECTED else ""
            note += " (set by the noise protocol)" if noise and key in SET_BY_NOISE else ""
            problems.append(f"config key '{where}': unknown parameter '{key}' for {name}{note}; "
                            f"valid: {', '.join(known) or 'none'}")
        elif (problem := check_value(plugin, key, value, known[key])) is not None:
            problems.append(f"config key '{where}': {problem}")
    return problems


def validate_pipeline(spec: Any, key: str, transforms: list[str],
                      check: Callable[[str, Any, Any], list[str]]) -> list[str]:
    """Problems of a pipeline ``spec`` (a list of single-key mappings ``transform: params``) at config key ``key``;
    ``check(where, name, params)`` returns the problems of one item, ``transforms`` names the valid ones."""
    if not isinstance(spec, list):
        return [f"config key '{key}': must be a list of single-key mappings (transform: params), "
                f"got {type(spec).__name__}"]
    problems = []
    for i, item in enumerate(spec):
        if not (isinstance(item, Mapping) and len(item) == 1):
            problems.append(f"config key '{key}[{i}]': must be a single-key mapping transform: params, got {item!r}; "
                            f"valid transforms: {', '.join(transforms)}")
            continue
        ((name, params),) = item.items()
        problems += check(f"{key}[{i}].{name}", name, params)
    return problems


def validate_augment(spec: Any, key: str) -> list[str]:
    """Problems of an ECG augmentation pipeline config ``spec`` found at dotted config key ``key`` (empty if valid).

    ``spec`` must be a list (an empty list is the identity) of single-key mappings ``transform: params`` with a
    known transform, known parameters, ranges as [lo, hi] with lo <= hi, probabilities in [0, 1] and
    non-negative amplitudes. Messages read ``config key '<key>[i].<transform>': ...``."""
    names = TRANSFORMS.names()
    return validate_pipeline(spec, key, names,
                             lambda where, name, params: check_transform(where, name, params, TRANSFORMS, names, False))


def validate_noise(spec: Any, key: str) -> list[str]:
    """Problems of a robustness noise spec (mapping of noise transform → parameters at level 1) at config key
    ``key``; only the physiological noise transforms are allowed and ``p`` / ``fixed_amplitude`` are set by
    :func:`physiossl.augment.ecg.build_noise`. Messages read ``config key '<key>.<transform>': ...``."""
    names = noise_transforms()
    if not isinstance(spec, Mapping):
        return [f"config key '{key}': must be a mapping of noise transform to parameters, got {type(spec).__name__}; "
                f"valid transforms: {', '.join(names)}"]
    problems = []
    for name, params in spec.items():
        problems += check_transform(f"{key}.{name}", name, params, TRANSFORMS, names, noise=True)
    return problems


def special_params(plugin: Plugin) -> tuple[str, ...]:
    """The parameters of an audio transform checked by :func:`check_special` rather than by the ECG rules."""
    return (*plugin.get("signed_params", ()), *plugin.get("option_params", {}), *plugin.get("unit_params", ()),
            *plugin.get("positive_scalars", ()))


def check_special(plugin: Plugin, name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for the audio-specific parameter ``name`` (None when it is)."""
    if name in plugin.get("signed_params", ()):
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)):
            return f"parameter '{name}' must be a range [lo, hi] of two numbers, got {value!r}"
        if value[0] > value[1]:
            return f"parameter '{name}' range [lo, hi] needs lo <= hi, got {list(value)}"
        return None
    options = plugin.get("option_params", {})
    if name in options:
        return None if value in options[name] else (f"parameter '{name}' must be one of "
                                                    f"{', '.join(map(repr, options[name]))}, got {value!r}")
    if name in plugin.get("unit_params", ()):
        ok = is_number(value) and 0 <= value <= 1
        return None if ok else f"parameter '{name}' must be a fraction in [0, 1], got {value!r}"
    ok = is_number(value) and value > 0
    return None if ok else f"parameter '{name}' must be a positive number, got {value!r}"


def _check_audio_transform(where: str, name: Any, params: Any) -> list[str]:
    names = AUDIO_TRANSFORMS.names()
    if name not in names or not isinstance(params, Mapping):
        return check_transform(where, name, params, AUDIO_TRANSFORMS, names, noise=False)
    plugin = AUDIO_TRANSFORMS[name]
    special = special_params(plugin)
    problems = check_transform(where, name, {k: v for k, v in params.items() if k not in special},
                               AUDIO_TRANSFORMS, names, noise=False)
    for key, value in params.items():
        if key in special and (problem := check_special(plugin, key, value)) is not None:
            problems.append(f"config key '{where}': {problem}")
    if not problems:
        values = {**transform_params(plugin), **params}
        problems += [f"config key '{where}': parameters '{a}' and '{b}' need {a} < {b}, got {values[a]!r} and "
                     f"{values[b]!r}" for a, b in plugin.get("ordered_params", ()) if not values[a] < values[b]]
    return problems


def validate_audio_augment(spec: Any, key: str) -> list[str]:
    """Problems of an audio augmentation pipeline config ``spec`` found at dotted config key ``key`` (empty if
    valid).

    ``spec`` must be a list (an empty list is the identity) of single-key mappings ``transform: params`` with a
    known transform and known parameters: ranges as [lo, hi] with lo <= hi (``db`` and ``snr_db`` may be
    negative), probabilities and ``max_frac`` in [0, 1], non-negative integer counts, ``noise`` / ``fill`` among
    their options, 0 <= ``fmin`` < ``fmax``. Messages read ``config key '<key>[i].<transform>': ...``."""
    return validate_pipeline(spec, key, AUDIO_TRANSFORMS.names(), _check_audio_transform)
