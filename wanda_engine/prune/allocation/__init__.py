"""Sparsity-allocation policies: how the target sparsity is spread over the decoder blocks.
One file per policy, registered under its --sparsity_allocation name.

A policy gets the target, a `BlockProfile` (per-block prunable parameter counts and linear shapes, plus
the per-block statistic it asked for through `statistic()`, measured on the dense model by
prune/importance.py) and its `AllocationOptions`, and returns an `Allocation`: one SparsityTarget per
block. The shared arithmetic (mean-preserving shift with clamping, tier split) is in solve.py.
"""

from .base import (
    ALLOCATIONS, STATISTICS, TIERS, Allocation, AllocationOptions, AllocationPolicy, BlockProfile, allocation_options,
    auto_tier_delta, parse_tier_types,
)
from . import owl, three_tier, uniform  # noqa: E402,F401  (registration side effects)

__all__ = [
    "ALLOCATIONS", "STATISTICS", "TIERS", "Allocation", "AllocationOptions", "AllocationPolicy", "BlockProfile",
    "allocation_options", "auto_tier_delta", "parse_tier_types",
]
