"""Every block pruned at the target ratio (the reference's behaviour)."""

from __future__ import annotations

from . import ALLOCATIONS


@ALLOCATIONS.register("uniform")
class Uniform:
    def allocate(self, num_blocks: int, target: float) -> list[float]:
        return [target] * num_blocks
