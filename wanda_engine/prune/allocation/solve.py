"""Shared arithmetic of the allocation policies.

- `shift_to_mean`: given a base sparsity per block, find the one offset c such that
  clamp(base_i + c, 0, 0.99) has the target parameter-weighted mean. The mean is a continuous,
  piecewise-linear, non-decreasing function of c, so it is solved exactly between its breakpoints
  (clamped blocks stay clamped; the others absorb what they gave up: "clamp and redistribute").
- `match_realized`: methods that prune exactly int(in_features · ratio) weights per row lose up to one
  weight per row to rounding; this nudges the offset so that the *pruned count* is as close as it can
  get to target × parameters (usually within 1e-4 of the target).
- `split_tiers`: rank blocks by importance into high / middle / low tiers.
"""

from __future__ import annotations

import math
from typing import Sequence

MIN_RATIO = 0.0
MAX_RATIO = 0.99


def weighted_mean(ratios: Sequence[float], weights: Sequence[float]) -> float:
    total = float(sum(weights))
    return sum(r * w for r, w in zip(ratios, weights)) / total


def clamp(value: float, lo: float = MIN_RATIO, hi: float = MAX_RATIO) -> float:
    return min(hi, max(lo, value))


def _shifted(base: Sequence[float], offset: float, lo: float, hi: float) -> list[float]:
    return [clamp(b + offset, lo, hi) for b in base]


def solve_offset(base: Sequence[float], weights: Sequence[float], target: float,
                 lo: float = MIN_RATIO, hi: float = MAX_RATIO) -> float:
    """The offset c with weighted_mean(clamp(base + c)) == target (exact up to rounding); when the target
    is outside [lo, hi] the offset that clamps every block to the nearest bound."""
    if not base:
        return 0.0
    if len(base) != len(weights):
        raise ValueError(f"{len(base)} base ratios for {len(weights)} weights")
    breakpoints = sorted({lo - b for b in base} | {hi - b for b in base})
    if target <= lo:
        return breakpoints[0]
    if target >= hi:
        return breakpoints[-1]

    def mean_at(offset: float) -> float:
        return weighted_mean(_shifted(base, offset, lo, hi), weights)

    previous, previous_mean = breakpoints[0], lo
    for point in breakpoints[1:]:
        point_mean = mean_at(point)
        if point_mean >= target:
            # The mean is linear on [previous, point]: interpolate.
            if point_mean == previous_mean:
                return point
            return previous + (target - previous_mean) * (point - previous) / (point_mean - previous_mean)
        previous, previous_mean = point, point_mean
    return breakpoints[-1]


def shift_to_mean(base: Sequence[float], weights: Sequence[float], target: float,
                  lo: float = MIN_RATIO, hi: float = MAX_RATIO) -> list[float]:
    """clamp(base_i + c) with the parameter-weighted mean equal to the target."""
    ratios = _shifted(base, solve_offset(base, weights, target, lo, hi), lo, hi)
    # Remove the last rounding error of the interpolation from the unclamped blocks (one correction step).
    free = [i for i, r in enumerate(ratios) if lo < r < hi]
    if free and lo < target < hi:
        error = weighted_mean(ratios, weights) - target
        free_weight = sum(weights[i] for i in free)
        correction = error * float(sum(weights)) / free_weight
        for i in free:
            ratios[i] = clamp(ratios[i] - correction, lo, hi)
    return ratios


def rowwise_pruned(ratios: Sequence[float], shapes: Sequence[Sequence[tuple[int, int]]]) -> int:
    """Weights pruned when each row of a (rows, cols) linear loses exactly int(cols · ratio)."""
    return sum(rows * int(cols * r) for r, block in zip(ratios, shapes) for rows, cols in block)


def match_realized(base: Sequence[float], weights: Sequence[float], shapes: Sequence[Sequence[tuple[int, int]]],
                   target: float, lo: float = MIN_RATIO, hi: float = MAX_RATIO) -> list[float]:
    """Like shift_to_mean, but with the offset chosen so that the row-rounded pruned count is closest to
    target × total weights."""
    total = sum(rows * cols for block in shapes for rows, cols in block)
    goal = target * total
    offset = solve_offset(base, weights, target, lo, hi)
    if not lo < target < hi:
        return _shifted(base, offset, lo, hi)

    def count(c: float) -> int:
        return rowwise_pruned(_shifted(base, c, lo, hi), shapes)

    below = offset
    if count(below) >= goal:
        return _shifted(base, below, lo, hi)
    # Rounding loses less than one column per row, so the goal is reached within one column's worth.
    step = 1.0 / min(cols for block in shapes for _, cols in block)
    above = below + step
    while count(above) < goal:
        if all(b + above >= hi for b in base):
            return _shifted(base, above, lo, hi)
        above += step
    for _ in range(60):
        middle = (below + above) / 2
        if count(middle) >= goal:
            above = middle
        else:
            below = middle
    best = min((below, above), key=lambda c: (abs(count(c) - goal), c))
    return _shifted(base, best, lo, hi)


def tier_sizes(num_blocks: int, fractions: Sequence[float]) -> list[int]:
    """Blocks per tier by the largest-remainder method (sums to num_blocks; ties to the earlier tier)."""
    quotas = [f * num_blocks for f in fractions]
    sizes = [math.floor(q + 1e-9) for q in quotas]
    remainders = sorted(range(len(quotas)), key=lambda i: -(quotas[i] - sizes[i]))  # stable: earlier tier first
    for i in remainders[: num_blocks - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_tiers(importance: Sequence[float], fractions: Sequence[float]) -> list[int]:
    """Tier index per block (0 = high, most important ... 2 = low). Blocks are ranked by importance,
    highest first; equal importances keep block order (the earlier block goes to the more important
    tier), so the split is deterministic under ties."""
    if any(not math.isfinite(v) for v in importance):
        raise ValueError(f"block importance must be finite, got {list(importance)}")
    order = sorted(range(len(importance)), key=lambda i: -importance[i])
    tiers = [0] * len(importance)
    position = 0
    for tier, size in enumerate(tier_sizes(len(importance), fractions)):
        for block in order[position : position + size]:
            tiers[block] = tier
        position += size
    return tiers


def balance(base: Sequence[float], profile, target: float) -> list[float]:
    """Shift `base` so the mean over the profile's blocks is the target: by parameter-weighted ratio, or,
    for row-rounding methods with known shapes, by the weights actually pruned."""
    if profile.row_rounding and profile.shapes:
        return match_realized(base, profile.params, profile.shapes, target)
    return shift_to_mean(base, profile.params, target)
