"""The issue's goals as pass / FAIL / n/a, checked on ratios between sides measured side by side in the same
run (absolute seconds depend on the machine and its load); n/a, with the reason, where a side is missing."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.runner import Side


@dataclass
class Goal:
    text: str
    status: str  # "pass", "FAIL", "n/a"
    value: str


def _check(ok: bool | None, value: str, why_na: str = "") -> tuple[str, str]:
    if ok is None:
        return "n/a", why_na
    return ("pass" if ok else "FAIL"), value


# The SmolLM2 memory goal: peak RSS at most this many times what a streamed run must hold.
RSS_BUDGET_FACTOR = 1.5


def rss_budget_mb(side: Side | None, baseline_rss: float | None) -> float | None:
    """RSS_BUDGET_FACTOR × (largest block's weights + embeddings + an untied lm_head + one copy of the
    calibration hidden states + the import-only process's peak), from the engine's report.json `memory`."""
    memory = side.info.get("memory") if side is not None else None
    if memory is None or memory.total_mb is None or baseline_rss is None:
        return None
    return RSS_BUDGET_FACTOR * (baseline_rss + memory.total_mb)


def evaluate_goals(sides: dict[str, Side], baseline_rss: float | None = None) -> list[Goal]:
    """The issue's goals for one sparsity, from the sides measured side by side."""
    floor, ref, seq, rs = (sides.get(k) for k in ("floor", "engine_reference", "engine_sequential", "restatement"))

    def ok(side: Side | None, *attrs: str) -> bool:
        return side is not None and side.available and all(getattr(side, a) is not None for a in attrs)

    goals: list[Goal] = []

    def add(text: str, needs: bool, test, value, why: str) -> None:
        if not needs:
            goals.append(Goal(text, "n/a", why))
        else:
            status, shown = _check(test(), value())
            goals.append(Goal(text, status, shown))

    add("reference: ≥ 99.9% identical mask entries", ok(ref, "agreement"),
        lambda: ref.agreement >= 0.999, lambda: f"{ref.agreement:.4%}", "no masks")
    add("reference: ppl within 0.5% of the re-statement", ok(ref, "ppl") and ok(rs, "ppl"),
        lambda: abs(ref.ppl / rs.ppl - 1) <= 0.005, lambda: f"{ref.ppl / rs.ppl - 1:+.2%}", "no ppl")
    add("reference: prune stage ≤ 2.2× the floor", ok(ref, "prune_s") and ok(floor, "prune_s"),
        lambda: ref.prune_s <= 2.2 * floor.prune_s, lambda: f"{ref.prune_s / floor.prune_s:.2f}×", "not measured")
    add("reference: lower peak RSS than the re-statement", ok(ref, "peak_rss_mb") and ok(rs, "peak_rss_mb"),
        lambda: ref.peak_rss_mb < rs.peak_rss_mb, lambda: f"{ref.peak_rss_mb:.0f} vs {rs.peak_rss_mb:.0f} MB", "not measured")
    add("sequential: prune stage ≤ 1.3× the floor", ok(seq, "prune_s") and ok(floor, "prune_s"),
        lambda: seq.prune_s <= 1.3 * floor.prune_s, lambda: f"{seq.prune_s / floor.prune_s:.2f}×",
        "sequential not available")
    add("sequential: ≥ 2× faster than the re-statement", ok(seq, "prune_s") and ok(rs, "prune_s"),
        lambda: rs.prune_s >= 2 * seq.prune_s, lambda: f"{rs.prune_s / seq.prune_s:.2f}×", "sequential not available")
    add("sequential: ppl no worse than the reference schedule's by > 0.5%", ok(seq, "ppl") and ok(ref, "ppl"),
        lambda: seq.ppl <= ref.ppl * 1.005, lambda: f"{seq.ppl / ref.ppl - 1:+.2%}", "sequential not available")
    add("sequential: lower peak RSS than the re-statement", ok(seq, "peak_rss_mb") and ok(rs, "peak_rss_mb"),
        lambda: seq.peak_rss_mb < rs.peak_rss_mb, lambda: f"{seq.peak_rss_mb:.0f} vs {rs.peak_rss_mb:.0f} MB",
        "sequential not available")
    for name, side in (("reference", ref), ("sequential", seq)):
        budget = rss_budget_mb(side, baseline_rss) if ok(side, "peak_rss_mb") else None
        add(f"{name}: peak RSS ≤ {RSS_BUDGET_FACTOR:g}× (block + hidden states + embeddings + baseline)", budget is not None,
            lambda: side.peak_rss_mb <= budget, lambda: f"{side.peak_rss_mb:.0f} vs {budget:.0f} MB",
            "no memory figures")
    return goals


# The scaling goal: a streamed run's peak RSS grows by less than this when the model gets 4× deeper.
MAX_RSS_GROWTH = 0.30


def growth_goals(by_depth: dict, first: int, last: int) -> list[str]:
    """The scaling goal for the streaming sides, as lines of a list (empty when the depths are not 1:4)."""
    if last != 4 * first:
        return []
    lines = [f"Goal (from the issue): streamed, peak RSS grows by less than {MAX_RSS_GROWTH:.0%} from {first} to {last} blocks:", ""]
    for key in ("engine_reference", "engine_sequential"):
        a, b = by_depth[first].get(key), by_depth[last].get(key)
        if a is None or b is None:
            continue
        if not (a.available and b.available and a.peak_rss_mb and b.peak_rss_mb):
            lines.append(f"- {a.label}: n/a (not measured)")
            continue
        growth = b.peak_rss_mb / a.peak_rss_mb - 1
        verdict = "pass" if growth < MAX_RSS_GROWTH else "**FAIL**"
        lines.append(f"- {a.label}: {verdict} ({growth:+.0%}: {a.peak_rss_mb:.0f} → {b.peak_rss_mb:.0f} MB)")
    return lines + [""]
