"""Sparsity-allocation policies: how the target sparsity is spread over the decoder blocks.
One file per policy, registered under its --sparsity_allocation name."""

from __future__ import annotations

from typing import Protocol

from ...registry import Registry


class AllocationPolicy(Protocol):
    def allocate(self, num_blocks: int, target: float) -> list[float]:
        """Per-block sparsity ratios whose parameter-weighted mean is the target."""
        ...


ALLOCATIONS: Registry[AllocationPolicy] = Registry("sparsity allocation", "--sparsity_allocation")

from . import uniform  # noqa: E402,F401  (registration side effects)

__all__ = ["ALLOCATIONS", "AllocationPolicy"]
