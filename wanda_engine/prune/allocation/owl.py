"""OWL (Outlier Weighed Layerwise sparsity, Yin et al. 2023): blocks with more outlier scores are pruned
less. Per block, the outlier ratio is the share of Wanda scores |W|·sqrt(Σx²) above --owl_m times the
block's mean score (measured on the dense model, prune/importance.py). Ratios are mapped linearly onto
[target - λ, target + λ] (--owl_lambda; the most outlier-rich block gets target - λ), then shifted by one
common offset so the parameter-weighted mean sparsity is the target (clamped to [0, 0.99])."""

from __future__ import annotations

from ..sparsity import SparsityTarget
from .base import ALLOCATIONS, Allocation, AllocationOptions, BlockProfile
from .solve import balance


@ALLOCATIONS.register("owl")
class Owl:
    def statistic(self, options: AllocationOptions) -> str | None:
        return "outlier"

    def settings(self, options: AllocationOptions) -> dict:
        return {"owl_m": options.owl_m, "owl_lambda": options.owl_lambda}

    def allocate(self, target: SparsityTarget, profile: BlockProfile, options: AllocationOptions) -> Allocation:
        if profile.statistic is None or len(profile.statistic) != profile.num_blocks:
            raise ValueError("owl needs one outlier ratio per block")
        low, high = min(profile.statistic), max(profile.statistic)
        notes = []
        if high > low:
            span = options.owl_lambda
            base = [target.ratio + span - 2 * span * (value - low) / (high - low) for value in profile.statistic]
        else:
            base = [target.ratio] * profile.num_blocks
            notes.append("every block has the same outlier ratio: uniform allocation")
        ratios = balance(base, profile, target.ratio)
        return Allocation([SparsityTarget(r) for r in ratios], notes=notes)
