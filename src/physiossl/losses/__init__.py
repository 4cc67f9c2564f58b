"""Losses: pure functions, one per file."""

from .nt_xent import nt_xent

__all__ = ["nt_xent"]
