"""What every pruning method shares: the protocol and the registry (--prune_method).

A method turns one weight matrix (and, if it needs them, the fp32 Σx² statistics of its input)
into a pruning mask, zeroing the weight in place. Options of a method are its own (Wanda's variant:
`METHODS.get("wanda").variant()`), not registry entries.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ...registry import Registry
from ..sparsity import SparsityTarget


class PruningMethod(Protocol):
    name: str  # as the report names it
    needs_statistics: bool  # whether it scores with the activation statistic (else: weights only)
    counts_per_row: bool  # whether it prunes exactly int(in_features · ratio) entries of every row


    def prune_(self, weight: torch.Tensor, sq_norms: torch.Tensor | None, target: SparsityTarget) -> torch.Tensor:
        """Zero the pruned entries of `weight` in place and return the bool mask (True = pruned)."""
        ...


METHODS: Registry[PruningMethod] = Registry("pruning method", "--prune_method")
