"""Pruning methods: one file per method, each registered under its --prune_method name.

A method turns one weight matrix (and, if it needs them, the fp32 Σx² statistics of its input)
into a pruning mask, zeroing the weight in place.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ...registry import Registry
from ..sparsity import SparsityTarget


class PruningMethod(Protocol):
    needs_statistics: bool

    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        """Zero the pruned entries of `weight` in place and return the bool mask (True = pruned)."""
        ...


METHODS: Registry[PruningMethod] = Registry("pruning method", "--prune_method")

from . import magnitude, wanda, wanda_variant  # noqa: E402,F401  (registration side effects)

__all__ = ["METHODS", "PruningMethod"]
