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


def prune_together(method: PruningMethod, items: list[tuple[torch.Tensor, torch.Tensor | None]],
                   target: SparsityTarget) -> list[torch.Tensor]:
    """Prune several weight matrices (each with its statistic) and return their masks in order. A
    method that spreads the work (`distributed.SharedMasks`: each rank selects some of the masks) is
    given them together; any other prunes them one by one."""
    together = getattr(method, "prune_together", None)
    if together is not None:
        return together(items, target)
    return [method.prune_(weight, sq_norms, target) for weight, sq_norms in items]
