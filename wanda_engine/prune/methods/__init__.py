"""Pruning methods: one file per method, each registered under its --prune_method name in METHODS
(base.py). Options of a method are its own (Wanda's variant: `METHODS.get("wanda").variant()`)."""

from .base import METHODS, PruningMethod, prune_together
from . import magnitude, wanda  # noqa: E402,F401  (registration side effects)

__all__ = ["METHODS", "PruningMethod", "prune_together"]
