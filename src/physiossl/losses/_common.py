"""Helpers shared by the losses: the full-precision decorator, the paired (N, D) shape check, the row cosine."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F

_F = TypeVar("_F", bound=Callable[..., Any])


def _promote(value: Any) -> Any:
    """Floating tensors (also inside lists and tuples) promoted to at least float32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.promote_types(value.dtype, torch.float32)) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_promote(v) for v in value)
    return value


def full_precision(fn: _F) -> _F:
    """Run ``fn`` outside autocast (disabled for "cuda" and "cpu") with its floating tensor arguments, also those
    in lists or tuples, promoted to at least float32 (float64 stays float64).

    Casting the inputs alone is not enough under mixed precision: inside an enabled autocast region matmuls and
    einsums would run in float16 / bfloat16 again. Gradients flow back to the inputs in their own dtype.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*_promote(args), **{k: _promote(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    """Raise ValueError unless ``a`` and ``b`` are (N, D) tensors of the same shape (``names`` for the message)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected {names} of the same (N, D) shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_i, b_i) for every row i of two (N, D) tensors, shape (N,)."""
    return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1)
