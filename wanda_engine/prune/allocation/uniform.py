"""Every block pruned at the target ratio (the reference's behaviour)."""

from __future__ import annotations

from ..sparsity import SparsityTarget
from .base import ALLOCATIONS, Allocation, AllocationOptions, BlockProfile


@ALLOCATIONS.register("uniform")
class Uniform:
    def statistic(self, options: AllocationOptions) -> str | None:
        return None

    def settings(self, options: AllocationOptions) -> dict:
        return {}

    def allocate(self, target: SparsityTarget, profile: BlockProfile, options: AllocationOptions) -> Allocation:
        return Allocation([target] * profile.num_blocks)
