"""What every sparsity-allocation policy shares: the block profile, options and result types, the
protocol and the registry (--sparsity_allocation), and the parsing of the allocation flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ...errors import UserError
from ...report.types import BLOCK_STATISTICS
from ...registry import Registry
from ..sparsity import SparsityTarget, parse_sparsity

# Block statistics a policy can ask for (measured together in one dense pass, see prune/importance.py).
STATISTICS = BLOCK_STATISTICS  # the block statistics a policy can rank by (report.types)
TIERS = ("high", "middle", "low")  # importance tiers, most important first


@dataclass(frozen=True)
class AllocationOptions:
    importance: str | None = None  # block statistic three_tier ranks by: influence | outlier
    tier_fractions: tuple[float, float, float] = (0.33, 0.34, 0.33)  # share of blocks per tier, high first
    tier_delta: float | None = None  # tiers at target - delta / target / target + delta; None = auto_tier_delta
    tier_types: tuple[SparsityTarget | None, ...] | None = None  # per tier an N:M pattern, None = unstructured
    owl_m: float = 5.0  # OWL outlier threshold: score above owl_m × the block's mean score
    owl_lambda: float = 0.08  # OWL: block sparsities span target ± owl_lambda


@dataclass(frozen=True)
class BlockProfile:
    """What a policy knows about the blocks."""

    params: tuple[int, ...]  # prunable weights per block
    shapes: tuple[tuple[tuple[int, int], ...], ...] = ()  # per block, (rows, in_features) of each linear
    statistic: tuple[float, ...] | None = None  # the per-block statistic the policy asked for
    row_rounding: bool = False  # the method prunes exactly int(in_features · ratio) weights per row

    @property
    def num_blocks(self) -> int:
        return len(self.params)


@dataclass
class Allocation:
    targets: list[SparsityTarget]
    tiers: list[str] | None = None  # tier name per block (three_tier only)
    mean_forced: bool = True  # the parameter-weighted mean was solved to equal the target
    delta: float | None = None  # three_tier: the tier delta used
    notes: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [t.ratio for t in self.targets]


class AllocationPolicy(Protocol):
    def statistic(self, options: AllocationOptions) -> str | None:
        """Which block statistic (one of STATISTICS) `allocate` needs in `profile.statistic`, or None."""
        ...

    def settings(self, options: AllocationOptions) -> dict:
        """The options this policy uses, as plain JSON values (for the report)."""
        ...

    def allocate(self, target: SparsityTarget, profile: BlockProfile, options: AllocationOptions) -> Allocation:
        """One sparsity target per block; unless `mean_forced` is False, their parameter-weighted mean
        sparsity is the target."""
        ...


def auto_tier_delta(target: float) -> float:
    """Default --tier_delta: (target - 0.4) / 2, at least 0 (0.05 at 50%, 0.1 at 60%, 0.15 at 70%):
    the best fixed delta grows with the target (measured: docs/allocation.md)."""
    return max(0.0, (target - 0.4) / 2)


ALLOCATIONS: Registry[AllocationPolicy] = Registry("sparsity allocation", "--sparsity_allocation")


def _floats(text: str, flag: str, count: int) -> tuple[float, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected {count} comma-separated numbers, e.g. 0.33,0.34,0.33") from None
    if len(values) != count:
        raise UserError(f"{flag} {text!r}: expected {count} comma-separated numbers (high,middle,low), got {len(values)}")
    return values


def parse_tier_types(text: str) -> tuple[SparsityTarget | None, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise UserError(f"--tier_types {text!r}: expected three types (high,middle,low), e.g. 4:8,2:4,unstructured")
    types = []
    for part in parts:
        if part == "unstructured":
            types.append(None)
            continue
        try:
            types.append(parse_sparsity(part, None))
        except UserError:
            raise UserError(f"--tier_types {text!r}: {part!r} is neither 'unstructured' nor N:M (e.g. 2:4)") from None
    return tuple(types)


def allocation_options(
    policy: str,
    target: SparsityTarget,
    *,
    importance: str | None = None,
    tier_fractions: str | None = None,
    tier_delta: float | None = None,
    tier_types: str | None = None,
    owl_m: float | None = None,
    owl_lambda: float | None = None,
    importance_from: str | None = None,
) -> AllocationOptions:
    """Validate the allocation flags (None = not given) against the policy and the sparsity target;
    raises UserError before any model is loaded."""
    ALLOCATIONS.get(policy)

    def only_for(flag: str, value, allowed: tuple[str, ...]) -> None:
        if value is not None and policy not in allowed:
            raise UserError(
                f"{flag} applies to --sparsity_allocation {' or '.join(allowed)}, not {policy!r}; drop {flag}"
            )

    only_for("--importance", importance, ("three_tier",))
    only_for("--tier_fractions", tier_fractions, ("three_tier",))
    only_for("--tier_delta", tier_delta, ("three_tier",))
    only_for("--tier_types", tier_types, ("three_tier",))
    only_for("--owl_lambda", owl_lambda, ("owl",))
    only_for("--owl_m", owl_m, ("owl", "three_tier"))
    only_for("--importance_from", importance_from, ("three_tier", "owl"))
    if importance is not None and importance not in STATISTICS:
        raise UserError(f"--importance {importance!r}: choose one of {', '.join(STATISTICS)}")
    if policy == "three_tier" and owl_m is not None and (importance or "influence") != "outlier":
        raise UserError("--owl_m applies to --importance outlier (or --sparsity_allocation owl); drop --owl_m")

    options = AllocationOptions()
    values: dict = {}
    if importance is not None:
        values["importance"] = importance
    if tier_fractions is not None:
        fractions = _floats(tier_fractions, "--tier_fractions", 3)
        if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise UserError(f"--tier_fractions {tier_fractions!r}: three non-negative shares that sum to 1, e.g. 0.33,0.34,0.33")
        values["tier_fractions"] = fractions
    if tier_delta is not None:
        if not 0.0 <= float(tier_delta) < 1.0:
            raise UserError(f"--tier_delta {tier_delta}: must be in [0, 1), e.g. 0.1")
        values["tier_delta"] = float(tier_delta)
    if tier_types is not None:
        values["tier_types"] = parse_tier_types(tier_types)
    if owl_m is not None:
        if not float(owl_m) > 0:
            raise UserError(f"--owl_m {owl_m}: must be positive, e.g. 5")
        values["owl_m"] = float(owl_m)
    if owl_lambda is not None:
        if not 0.0 <= float(owl_lambda) < 1.0:
            raise UserError(f"--owl_lambda {owl_lambda}: must be in [0, 1), e.g. 0.08")
        values["owl_lambda"] = float(owl_lambda)
    options = AllocationOptions(**{**options.__dict__, **values})

    if policy != "uniform" and target.structured and options.tier_types is None:
        raise UserError(
            f"--sparsity_allocation {policy} varies the ratio per block, which a fixed {target.label} pattern cannot; "
            "use --sparsity_type unstructured, or --tier_types (three_tier) for an N:M pattern per tier"
        )
    if options.tier_types is not None and target.structured:
        raise UserError(
            f"--tier_types sets the pattern of each tier; leave --sparsity_type at unstructured (got {target.label})"
        )
    return options
