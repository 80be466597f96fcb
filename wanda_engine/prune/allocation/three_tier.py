"""Block three-tier allocation: blocks ranked by a measured importance into high / middle / low tiers
(--tier_fractions), pruned at target - delta / target / target + delta (--tier_delta; by default
delta = (target - 0.4) / 2, see auto_tier_delta), then shifted by
one common offset so that the parameter-weighted mean sparsity is the target (ratios clamped to
[0, 0.99], the clamped remainder redistributed over the other blocks).

Hybrid (--tier_types): each tier gets its own pattern, e.g. 4:8,2:4,unstructured. An N:M tier is pruned
at N/M, an unstructured tier at its tier ratio (target ± delta, clamped); the mean is then what those
patterns give, reported as achieved rather than forced to the target.
"""

from __future__ import annotations

from ..sparsity import SparsityTarget
from .base import ALLOCATIONS, TIERS, Allocation, AllocationOptions, BlockProfile, auto_tier_delta
from .solve import MAX_RATIO, balance, clamp, split_tiers, weighted_mean


@ALLOCATIONS.register("three_tier")
class ThreeTier:
    def statistic(self, options: AllocationOptions) -> str | None:
        return options.importance or "influence"

    def settings(self, options: AllocationOptions) -> dict:
        settings = {
            "importance": self.statistic(options),
            "tier_fractions": list(options.tier_fractions),
            "tier_delta": options.tier_delta,  # None: auto_tier_delta(target), reported under tier_delta_used
            "tier_types": None if options.tier_types is None else [
                "unstructured" if t is None else t.label for t in options.tier_types
            ],
        }
        if settings["importance"] == "outlier":
            settings["owl_m"] = options.owl_m
        return settings

    def allocate(self, target: SparsityTarget, profile: BlockProfile, options: AllocationOptions) -> Allocation:
        if profile.statistic is None or len(profile.statistic) != profile.num_blocks:
            raise ValueError("three_tier needs one importance value per block")
        tiers = split_tiers(profile.statistic, options.tier_fractions)
        delta = auto_tier_delta(target.ratio) if options.tier_delta is None else options.tier_delta
        offsets = (-delta, 0.0, delta)
        names = [TIERS[t] for t in tiers]
        if options.tier_types is None:
            ratios = balance([target.ratio + offsets[t] for t in tiers], profile, target.ratio)
            notes = []
            if max(ratios) >= MAX_RATIO or target.ratio >= MAX_RATIO:
                notes.append(f"some blocks clamped at {MAX_RATIO}; the others carry the rest of the target")
            return Allocation([SparsityTarget(r) for r in ratios], tiers=names, notes=notes, delta=delta)
        targets = []
        for tier in tiers:
            pattern = options.tier_types[tier]
            targets.append(pattern if pattern is not None else SparsityTarget(clamp(target.ratio + offsets[tier])))
        achieved = weighted_mean([t.ratio for t in targets], profile.params)
        labels = ",".join("unstructured" if p is None else p.label for p in options.tier_types)
        note = (
            f"tier types {labels}: the mean sparsity is what these patterns give ({achieved:.4f}), "
            f"not forced to the target {target.ratio:g}"
        )
        return Allocation(targets, tiers=names, mean_forced=False, notes=[note], delta=delta)
